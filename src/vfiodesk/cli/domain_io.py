"""Reading and writing a domain for commands that take NAME (with --connect) or --xml FILE."""

from __future__ import annotations

from pathlib import Path

import click

from vfiodesk.domxml.document import DomainDocument
from vfiodesk.errors import InputError
from vfiodesk.host.userfiles import XML_FILE_LIMIT, read_user_bytes

domain_argument = click.argument("name", required=False)
xml_option = click.option("--xml", "xml_file", type=click.Path(path_type=Path),
                          help="Work on this domain XML file instead of a libvirt domain.")


def read_domain(name: str | None, xml_file: Path | None, uri: str | None) -> tuple[str, DomainDocument]:
    """The domain's XML text and its document."""
    if bool(name) == bool(xml_file):
        raise InputError("name a domain or give --xml FILE",
                         "e.g. vfiodesk vm tune win10, or --xml win10.xml")
    if xml_file is not None:
        data: str | bytes = read_user_bytes(xml_file, "domain XML file", XML_FILE_LIMIT)
    else:
        from vfiodesk import virt

        with virt.connection(uri) as conn:
            data = virt.domain_xml(conn, str(name))
    doc = DomainDocument.parse(data)
    return doc.source or "", doc


def write_domain(doc: DomainDocument, name: str | None, xml_file: Path | None, uri: str | None) -> None:
    """Define the edited domain in libvirt, or print it for --xml (the file is left as it was)."""
    if xml_file is not None:
        click.echo(doc.to_xml(), nl=False)
        return
    from vfiodesk import virt

    with virt.connection(uri) as conn:
        virt.define_domain(conn, doc.to_xml())
    click.echo(f"updated {name}")
