"""A real Scrapy spider for the demo site that `scrapethis dev` serves.

Run it through the API:
    {"spider_name": "quotes", "arguments": {"start_url": "http://127.0.0.1:8080/demo/"}}
"""
import scrapy


class QuotesSpider(scrapy.Spider):
    name = "quotes"

    def __init__(self, start_url="http://127.0.0.1:8080/demo/", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_urls = [start_url]

    def parse(self, response):
        for quote in response.css("div.quote"):
            yield {
                "text": quote.css("span.text::text").get(),
                "author": quote.css("small.author::text").get(),
                "url": response.url,
            }
        next_page = response.css("li.next a::attr(href)").get()
        if next_page is not None:
            yield response.follow(next_page, self.parse)
