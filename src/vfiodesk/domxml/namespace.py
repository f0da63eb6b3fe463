"""The XML namespace of vfiodesk's element in a domain's <metadata> (alone in its module, so
code that must not load lxml, such as the hook's first look at a domain, can name it)."""

NAMESPACE = "https://vfiodesk.dev/xmlns/domain/1"
