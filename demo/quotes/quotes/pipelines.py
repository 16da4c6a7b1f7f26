from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem


class QuotePipeline:
    """Cleans and checks each quote: strips whitespace, drops a quote without
    text or author or with fewer than QUOTES_MIN_WORDS words, counts its
    words and stamps it with QUOTES_SOURCE (both settings of this project)."""

    def __init__(self, source, min_words):
        self.source = source
        self.min_words = min_words

    @classmethod
    def from_crawler(cls, crawler):
        s = crawler.settings
        return cls(s.get("QUOTES_SOURCE", ""), s.getint("QUOTES_MIN_WORDS", 0))

    def process_item(self, item, spider):
        a = ItemAdapter(item)
        text = (a.get("text") or "").strip()
        author = (a.get("author") or "").strip()
        if not text or not author:
            raise DropItem(f"quote without text or author on {a.get('url')}")
        words = len(text.split())
        if words < self.min_words:
            raise DropItem(f"quote of {words} words, fewer than QUOTES_MIN_WORDS={self.min_words}")
        a["text"], a["author"] = text, author
        a["words"] = words
        a["source"] = self.source
        return item
