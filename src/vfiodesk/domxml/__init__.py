"""libvirt domain XML, edited in place as a document (unknown elements and comments survive)."""
