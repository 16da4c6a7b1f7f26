# The project's spiders: `scrapy list` finds every Spider class in this package.
