import scrapy


class QuoteItem(scrapy.Item):
    """One quote of the demo site."""

    text = scrapy.Field()
    author = scrapy.Field()
    url = scrapy.Field()
    # Set by quotes.pipelines.QuotePipeline.
    words = scrapy.Field()
    source = scrapy.Field()
