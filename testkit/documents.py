"""Test documents in every supported format, each about one distinct topic, plus bad files."""

from __future__ import annotations

import os
import random
import zipfile
from email.message import EmailMessage
from pathlib import Path

# file name -> (topic sentence a search should find, a query about it)
TOPICS: dict[str, tuple[str, str]] = {
    "glaciers.pdf": (
        "Glaciers are slow rivers of ice that carve valleys as they creep downhill.",
        "ice carving valleys",
    ),
    "solar.docx": (
        "Photovoltaic panels turn sunlight into electric current on rooftops.",
        "rooftop sunlight electricity",
    ),
    "quarterly.pptx": (
        "Quarterly revenue of the bakery grew because croissant sales doubled.",
        "croissant sales revenue",
    ),
    "budget.xlsx": ("Telescope mirror polishing budget", "telescope mirror cost"),
    "kubernetes.html": (
        "Kubernetes schedules containers into pods across a cluster of machines.",
        "container orchestration pods",
    ),
    "llamas.md": (
        "Llamas and alpacas graze on the high plateaus of the Andes mountains.",
        "andean camelids grazing",
    ),
    "volcano.txt": (
        "Volcanoes erupt when magma pressure beneath the crust becomes too great.",
        "magma eruption",
    ),
    "birds.csv": ("Penguin colonies nest on the Antarctic coast every winter.", "penguins antarctica"),
    "meeting.eml": (
        "The chess club meeting moves to Thursday evening in the library.",
        "chess club schedule",
    ),
}

FILLER = (
    "This paragraph adds ordinary background prose so that the document has a realistic length, "
    "with several sentences that carry no special meaning for the search tests. "
)


def _paragraphs(topic: str, count: int = 3) -> list[str]:
    return [topic + " " + FILLER * 2 for _ in range(count)]


def write_pdf(path: Path, title: str, body: list[str], password: str | None = None) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    if password:
        pdf.set_encryption(owner_password="owner-" + password, user_password=password)
    pdf.add_page()
    pdf.set_font("Helvetica", size=16)
    pdf.multi_cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    for paragraph in body:
        pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
    pdf.output(str(path))


def write_sectioned_pdf(path: Path, sections: dict[str, list[str]]) -> None:
    """A PDF with one page per section: its heading in a larger font, then its paragraphs."""
    from fpdf import FPDF

    pdf = FPDF()
    for heading, paragraphs in sections.items():
        pdf.add_page()
        pdf.set_y(40)  # below the top 7% of the page, where unstructured calls any text a Header
        pdf.set_font("Helvetica", size=18)
        pdf.multi_cell(0, 12, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        pdf.set_font("Helvetica", size=11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(5)
    pdf.output(str(path))


def write_document(path: Path, topic: str) -> None:
    """Write ``topic`` as a document in the format of ``path``'s extension."""
    title = path.stem.replace("_", " ").title()
    body = _paragraphs(topic)
    ext = path.suffix
    if ext == ".pdf":
        write_pdf(path, title, body)
    elif ext == ".docx":
        import docx

        document = docx.Document()
        document.add_heading(title, 1)
        for paragraph in body:
            document.add_paragraph(paragraph)
        document.save(str(path))
    elif ext == ".pptx":
        import pptx

        deck = pptx.Presentation()
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = "\n".join(body)
        deck.save(str(path))
    elif ext == ".xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append(["item", "description", "cost"])
        sheet.append(["mirror", topic, 1200])
        sheet.append(["polishing", topic + " for the second mirror", 300])
        book.save(str(path))
    elif ext == ".html":
        paragraphs = "".join(f"<p>{p}</p>" for p in body)
        path.write_text(f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{paragraphs}</body></html>")
    elif ext == ".md":
        path.write_text(f"# {title}\n\n" + "\n\n".join(body) + "\n")
    elif ext == ".txt":
        path.write_text(f"{title}\n\n" + "\n\n".join(body) + "\n")
    elif ext == ".csv":
        path.write_text("species,fact\n" + f'penguin,"{topic}"\nalbatross,"Albatrosses glide for hours."\n')
    elif ext == ".eml":
        message = EmailMessage()
        message["From"] = "secretary@example.org"
        message["To"] = "members@example.org"
        message["Subject"] = title
        message.set_content("\n\n".join(body))
        path.write_bytes(bytes(message))
    else:
        raise ValueError(ext)


def make_corpus(root: Path) -> dict[str, tuple[str, str]]:
    root.mkdir(parents=True, exist_ok=True)
    for name, (topic, _) in TOPICS.items():
        write_document(root / name, topic)
    return TOPICS


# file name -> (expected ledger status, a word the reason must contain)
BAD_FILES: dict[str, tuple[str, str]] = {
    "corrupt.pdf": ("failed", "cannot parse"),
    "locked.pdf": ("skipped", "encrypted"),
    "empty.txt": ("skipped", "empty"),
    "huge.txt": ("skipped", "limit"),
    "tool.exe": ("skipped", "unsupported"),
    "dangling.md": ("failed", "cannot read"),
}


def make_bad_files(root: Path, huge_bytes: int) -> dict[str, tuple[str, str]]:
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(4000)))
    write_pdf(root / "locked.pdf", "Secret", _paragraphs("Encrypted plans for the moon base."), password="s3cret")
    (root / "empty.txt").write_bytes(b"")
    with (root / "huge.txt").open("wb") as handle:
        handle.write(b"word " * (huge_bytes // 5 + 1))
    (root / "tool.exe").write_bytes(b"MZ" + bytes(100))
    os.symlink(root / "does-not-exist.md", root / "dangling.md")
    return BAD_FILES


def write_owner_locked_pdf(path: Path, topic: str) -> None:
    """A PDF with only an owner password (copying and printing forbidden): any viewer opens it without asking."""
    import pikepdf

    plain = path.with_suffix(".plain.pdf")
    write_pdf(plain, "Restricted", _paragraphs(topic))
    with pikepdf.open(plain) as pdf:
        restrictions = pikepdf.Permissions(extract=False, print_highres=False, print_lowres=False, modify_other=False)
        pdf.save(path, encryption=pikepdf.Encryption(owner="owner-only", user="", allow=restrictions))
    plain.unlink()


def write_docx_bomb(path: Path, inflated_mb: int) -> int:
    """A docx whose word/document.xml inflates to ``inflated_mb`` MB of paragraphs from a few MB on disk.

    Deflate does not compress a gigabyte quickly, so the member is written by hand: one compressed MB of
    paragraphs ending on a full flush (which resets the compressor's history) is a block that can be repeated.
    Returns the file's size in bytes."""
    import struct
    import zlib

    import docx

    docx.Document().save(str(path))
    with zipfile.ZipFile(path) as template:
        parts = {name: template.read(name) for name in template.namelist()}
    head, _, rest = parts["word/document.xml"].partition(b"<w:body>")
    head, tail = head + b"<w:body>", b"<w:sectPr/></w:body>" + rest.rpartition(b"</w:body>")[2]
    block = b"<w:p><w:r><w:t>bomb</w:t></w:r></w:p>" * (2**20 // 37)

    def deflate(*pieces: tuple[bytes, int]) -> tuple[bytes, int, int]:
        """(raw deflate stream, crc32, inflated size) of each piece repeated its count of times."""
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        stream, crc, size = b"", 0, 0
        for data, count in pieces:
            stream += (compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)) * count
            for _ in range(count):
                crc = zlib.crc32(data, crc)
            size += len(data) * count
        return stream + compressor.flush(), crc, size

    members = [(name, *deflate((data, 1))) for name, data in parts.items() if name != "word/document.xml"]
    members.append(("word/document.xml", *deflate((head, 1), (block, inflated_mb), (tail, 1))))
    local, central = b"", b""
    for name, stream, crc, size in members:
        encoded = name.encode()
        header = (20, 0, 8, 0, 0, crc, len(stream), size, len(encoded))
        central += struct.pack("<IH5H3I5H2I", 0x02014B50, 20, *header, 0, 0, 0, 0, 0, len(local)) + encoded
        local += struct.pack("<I5H3I2H", 0x04034B50, *header, 0) + encoded + stream
    end = struct.pack("<I4H2IH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(local + central + end)
    return path.stat().st_size


# Formats written by the tool that writes them for real: LibreOffice converts the OOXML files above, pandoc
# writes RTF and EPUB from Markdown, Python's email package writes a message with attachments.
# file name -> (topic sentence, the OOXML/Markdown file it is made from)
CONVERTED_TOPICS: dict[str, tuple[str, str]] = {
    "orchard.doc": ("Apple orchards need cross pollination by honeybees in spring.", "docx"),
    "harbour.odt": ("The harbour pilot guides tankers past the sandbanks at high tide.", "docx"),
    "lighthouse.ppt": ("Lighthouse keepers trimmed the lamp wicks every four hours.", "pptx"),
    "comet.odp": ("Comet tails always point away from the sun because of the solar wind.", "pptx"),
    "seeds.xls": ("Sunflower seed harvest tonnage", "xlsx"),
    "rivets.ods": ("Titanium rivet inventory count", "xlsx"),
    "falconry.rtf": ("Falconers train peregrines to return to a leather lure.", "md"),
    "origami.epub": ("Origami cranes are folded from a single uncut square of paper.", "md"),
}
# The message and the topic of each of its attachments.
EMAIL_TOPIC = "The allotment committee votes on the new compost rota next week."
ATTACHMENT_TOPICS: dict[str, str] = {
    "minutes.docx": "Beekeepers must register every hive with the county before June.",
    "rota.odt": "Greenhouse watering duty rotates between the three plot holders.",
    "forwarded.eml": "The tool shed padlock code changes on the first of the month.",
}


def libreoffice_profile_arg(profile: Path) -> str:
    return f"-env:UserInstallation={profile.resolve().as_uri()}"


def make_converted_corpus(root: Path) -> dict[str, str]:
    """Write every file of CONVERTED_TOPICS into ``root``; returns name -> topic sentence."""
    import subprocess

    root.mkdir(parents=True, exist_ok=True)
    sources = root / "sources"
    sources.mkdir(exist_ok=True)
    by_target: dict[str, list[Path]] = {}
    for name, (topic, source_ext) in CONVERTED_TOPICS.items():
        source = sources / f"{Path(name).stem}.{source_ext}"
        if source_ext == "md":
            source.write_text(f"# {source.stem.title()}\n\n" + "\n\n".join(_paragraphs(topic)) + "\n")
            subprocess.run(["pandoc", str(source), "-o", str(root / name)], check=True, timeout=60)
        else:
            write_document(source, topic)
            by_target.setdefault(Path(name).suffix[1:], []).append(source)
    profile = root / "libreoffice-profile"
    for target, files in by_target.items():
        subprocess.run(
            ["soffice", libreoffice_profile_arg(profile), "--headless", "--norestore", "--convert-to", target,
             "--outdir", str(root), *map(str, files)],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    return {name: topic for name, (topic, _) in CONVERTED_TOPICS.items()}


def write_message_with_attachments(path: Path, work: Path) -> None:
    """An .eml whose attachments are a .docx, an .odt (written by pandoc), a forwarded .eml and a .zip."""
    import subprocess

    work.mkdir(parents=True, exist_ok=True)
    message = EmailMessage()
    message["From"] = "chair@example.org"
    message["To"] = "plot-holders@example.org"
    message["Subject"] = "Allotment committee"
    message.set_content("\n\n".join(_paragraphs(EMAIL_TOPIC)))
    write_document(work / "minutes.docx", ATTACHMENT_TOPICS["minutes.docx"])
    markdown = work / "rota.md"
    markdown.write_text("\n\n".join(_paragraphs(ATTACHMENT_TOPICS["rota.odt"])) + "\n")
    subprocess.run(["pandoc", str(markdown), "-o", str(work / "rota.odt")], check=True, timeout=60)
    for name, (maintype, subtype) in {
        "minutes.docx": ("application", "vnd.openxmlformats-officedocument.wordprocessingml.document"),
        "rota.odt": ("application", "vnd.oasis.opendocument.text"),
    }.items():
        message.add_attachment((work / name).read_bytes(), maintype=maintype, subtype=subtype, filename=name)
    forwarded = EmailMessage()
    forwarded["Subject"] = "Shed"
    forwarded.set_content("\n\n".join(_paragraphs(ATTACHMENT_TOPICS["forwarded.eml"])))
    message.add_attachment(forwarded, filename="forwarded.eml")
    with zipfile.ZipFile(work / "photos.zip", "w") as archive:
        archive.writestr("readme.txt", "holiday photos")
    message.add_attachment((work / "photos.zip").read_bytes(), maintype="application", subtype="zip",
                           filename="photos.zip")  # fmt: skip
    path.write_bytes(bytes(message))


def debian_pdf(target: Path) -> Path:
    """bzip2's manual (Debian's bzip2-doc, installed by scripts/install.sh --test): a real pdfTeX document."""
    import gzip

    source = Path("/usr/share/doc/bzip2/manual.pdf.gz")
    if not source.exists():
        raise FileNotFoundError(f"{source} is missing: install Debian's bzip2-doc (scripts/install.sh --test)")
    target.write_bytes(gzip.decompress(source.read_bytes()))
    return target


def write_scanned_pdf(source: Path, pages: list[int], target: Path, dpi: int = 300) -> list[Path]:
    """``pages`` of ``source`` rendered with pdftoppm and rebuilt as an image-only PDF (a scan: no text layer).
    Returns the page images, for comparing with raw tesseract."""
    import subprocess

    from PIL import Image

    images: list[Path] = []
    for page in pages:
        prefix = target.parent / f"{target.stem}-page{page}"
        subprocess.run(["pdftoppm", "-f", str(page), "-l", str(page), "-r", str(dpi), "-gray", "-png",
                        "-singlefile", str(source), str(prefix)], check=True, timeout=60)  # fmt: skip
        images.append(prefix.with_suffix(".png"))
    frames = [Image.open(image) for image in images]
    frames[0].save(target, "PDF", resolution=dpi, save_all=True, append_images=frames[1:])
    return images


def write_blank_pdf(path: Path, pages: int) -> None:
    """A many-page PDF with no text at all (a long scan, at no cost to build)."""
    from fpdf import FPDF

    pdf = FPDF()
    for _ in range(pages):
        pdf.add_page()
    pdf.output(str(path))
