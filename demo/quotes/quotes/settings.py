# Scrapy settings of the demo project (the layout of `scrapy startproject`).
# A job's "settings" object overrides any of these for that job alone, e.g.
#   {"spider_name": "demo_quotes", "settings": {"QUOTES_SOURCE": "mine"}}

BOT_NAME = "quotes"

SPIDER_MODULES = ["quotes.spiders"]
NEWSPIDER_MODULE = "quotes.spiders"

# The demo site has no robots.txt to obey.
ROBOTSTXT_OBEY = False

# This project's own settings, read by quotes.pipelines.QuotePipeline:
# QUOTES_SOURCE is stamped on every item; quotes shorter than
# QUOTES_MIN_WORDS words are dropped.
QUOTES_SOURCE = "scrapethis-demo"
QUOTES_MIN_WORDS = 3

ITEM_PIPELINES = {
    "quotes.pipelines.QuotePipeline": 300,
}

# Defaults of `scrapy startproject` (Scrapy 2.8).
REQUEST_FINGERPRINTER_IMPLEMENTATION = "2.7"
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"
