import scrapy

from quotes.items import QuoteItem


class QuotesSpider(scrapy.Spider):
    """Crawls the demo site that `scrapethis dev` serves at /demo/, following
    its "next" links. Its name is not "quotes": that one is the spiders-dir
    spider (spiders/quotes.py) and spider names are unique per user.

        scrapy crawl demo_quotes -a base_url=http://127.0.0.1:8080/demo/
    """

    name = "demo_quotes"

    def __init__(self, base_url="http://127.0.0.1:8080/demo/", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_urls = [base_url]

    def parse(self, response):
        for quote in response.css("div.quote"):
            yield QuoteItem(
                text=quote.css("span.text::text").get(),
                author=quote.css("small.author::text").get(),
                url=response.url,
            )
        next_page = response.css("li.next a::attr(href)").get()
        if next_page is not None:
            yield response.follow(next_page, self.parse)
