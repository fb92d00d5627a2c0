"""Ingestion: every supported format from real files, heading paths, chunk sizes and overlap, errors."""

from __future__ import annotations

import itertools
import logging
import zipfile
from pathlib import Path

import pytest

from rag.ingest import (
    DEFAULT_MAX_WORDS,
    DEFAULT_TARGET_WORDS,
    Document,
    IngestError,
    Section,
    chunk_document,
    ingest_folder,
    load_file,
    parse_bytes,
)

_WORD_TEXT = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa"
WORDS = _WORD_TEXT.split()


def prose(n_sentences: int, words_per_sentence: int = 12, seed: int = 0) -> str:
    """Deterministic sentences of distinct-ish words, numbered so overlap can be located."""
    out = []
    for i in range(n_sentences):
        body = " ".join(WORDS[(seed + i + j) % len(WORDS)] for j in range(words_per_sentence - 1))
        out.append(f"Sentence{seed}x{i} {body}.")
    return " ".join(out)


def make_docx(path: Path, paragraphs: list[tuple[str, str]], title: str | None = None) -> Path:
    """Write a minimal but valid .docx: (style, text) paragraphs, optional core-properties title."""
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = []
    for style, text in paragraphs:
        ppr = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
        body.append(f'<w:p>{ppr}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>')
    document = (
        f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{w}"><w:body>{"".join(body)}</w:body></w:document>'
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("word/document.xml", document)
        if title is not None:
            archive.writestr(
                "docProps/core.xml",
                '<?xml version="1.0"?><cp:coreProperties xmlns:cp="urn:cp" '
                f'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></cp:coreProperties>',
            )
    return path


def make_pdf(path: Path, lines: list[str], title: str | None = None) -> Path:
    """Write a one-page PDF by hand (Helvetica text, correct xref table) that pypdf can read."""
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title is not None:
        objects.append(f"<< /Title ({title}) >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    info = f" /Info {len(objects)} 0 R" if title is not None else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def test_markdown_title_and_heading_paths(tmp_path: Path) -> None:
    """A lone H1 is the title; H2/H3 build the path; '#' inside a code fence is not a heading."""
    md = tmp_path / "guide.md"
    md.write_text(
        "# User Guide\n\n## Setup\n\n" + prose(5) + "\n\n### Redis\n\n```bash\n# start it\nredis-server\n```\n\n"
        "Redis notes here.\n\n## Troubleshooting\n\n" + prose(5, seed=3) + "\n"
    )
    doc = load_file(md)
    assert doc.title == "User Guide"
    assert [s.heading for s in doc.sections] == [("Setup",), ("Setup", "Redis"), ("Troubleshooting",)]
    chunks = chunk_document(doc)
    assert [c.heading for c in chunks] == ["Setup", "Setup > Redis", "Troubleshooting"]
    assert "# start it" in chunks[1].text
    assert chunks[1].indexed_text.startswith("User Guide > Setup > Redis\n\n")
    assert [c.chunk_id for c in chunks] == ["guide.md#0", "guide.md#1", "guide.md#2"]


def test_markdown_setext_front_matter_and_file_name_title(tmp_path: Path) -> None:
    """Front-matter title wins; setext headings count; without any title the file name is used."""
    md = tmp_path / "notes.md"
    md.write_text("---\ntitle: 'Front Title'\n---\nIntro\n=====\n\ntext one\n\nPart\n----\n\ntext two\n")
    doc = load_file(md)
    assert doc.title == "Front Title"
    assert [s.heading for s in doc.sections] == [("Intro",), ("Intro", "Part")]
    plain = tmp_path / "release_notes-2026.md"
    plain.write_text("## Only\n\nbody\n")
    assert load_file(plain).title == "Release notes 2026"


def test_chunk_sizes_and_overlap() -> None:
    """Long sections give chunks of 200-300 words, and each repeats ~15% of the previous one."""
    doc = Document("d", "T", "d", (Section(("H",), prose(200)),), "0")
    chunks = chunk_document(doc)
    assert len(chunks) > 5
    sizes = [len(c.text.split()) for c in chunks]
    assert all(DEFAULT_TARGET_WORDS * 0.8 <= n <= DEFAULT_MAX_WORDS for n in sizes[:-1]), sizes
    assert sizes[-1] <= DEFAULT_MAX_WORDS
    for prev, nxt in itertools.pairwise(chunks):
        first_sentence = nxt.text.split(".")[0]
        assert first_sentence in prev.text  # starts inside the previous chunk
        shared = len(prev.text.split(first_sentence, 1)[1].split()) + len(first_sentence.split())
        assert 0.10 * DEFAULT_TARGET_WORDS <= shared <= 0.25 * DEFAULT_TARGET_WORDS
    # Every sentence survives chunking.
    joined = " ".join(c.text for c in chunks)
    assert all(f"Sentence0x{i} " in joined for i in range(200))


def test_run_on_text_is_cut_between_words() -> None:
    """A 1,000-word sentence with no punctuation still gives bounded, overlapping chunks."""
    text = " ".join(f"w{i}" for i in range(1000))
    chunks = chunk_document(Document("d", "T", "d", (Section((), text),), "0"))
    assert all(len(c.text.split()) <= DEFAULT_MAX_WORDS for c in chunks)
    assert chunks[0].text.split()[-1] in chunks[1].text.split()
    assert "w999" in chunks[-1].text


def test_short_sections_fold_into_nested_ones() -> None:
    """A one-line intro under a heading joins its first subsection instead of being a chunk alone."""
    doc = Document("d", "T", "d", (Section(("A",), "Short intro."), Section(("A", "B"), prose(3))), "0")
    chunks = chunk_document(doc)
    assert len(chunks) == 1
    assert chunks[0].heading == "A > B"
    assert chunks[0].text.startswith("Short intro.")


def test_chunk_document_rejects_bad_parameters() -> None:
    """Nonsense sizes or overlap raise ValueError that quotes the value."""
    doc = Document("d", "T", "d", (Section((), "x"),), "0")
    with pytest.raises(ValueError, match="400"):
        chunk_document(doc, target_words=400, max_words=300)
    with pytest.raises(ValueError, match=r"0\.7"):
        chunk_document(doc, overlap=0.7)


def test_txt_and_html(tmp_path: Path) -> None:
    """Text paragraphs are re-flowed; HTML keeps title and headings and drops scripts and styles."""
    txt = tmp_path / "faq.txt"
    txt.write_text("first line\ncontinues\n\nsecond para\n", encoding="utf-8")
    assert load_file(txt).sections[0].text == "first line continues\n\nsecond para"
    html = tmp_path / "page.html"
    html.write_text(
        "<html><head><title>Ops &amp; Runbook</title><style>p{color:red}</style></head><body>"
        "<script>var secret = 1;</script><h1>Ops</h1><h2>Restart</h2><p>Run <b>make run</b> again.</p>"
        "<h3>Check</h3><ul><li>one</li><li>two</li></ul></body></html>"
    )
    doc = load_file(html)
    assert doc.title == "Ops & Runbook"
    # <title> differs from the lone <h1>, so the h1 stays in the heading path.
    assert [s.heading for s in doc.sections] == [("Ops", "Restart"), ("Ops", "Restart", "Check")]
    body = " ".join(s.text for s in doc.sections)
    assert "make run" in body
    assert "secret" not in body
    assert "color" not in body


def test_cp1252_text_is_accepted(tmp_path: Path) -> None:
    """Legacy Windows-1252 text decodes instead of failing."""
    txt = tmp_path / "old.txt"
    txt.write_bytes("caf\u00e9 \u2013 menu".encode("cp1252"))
    assert load_file(txt).sections[0].text == "caf\u00e9 \u2013 menu"


def test_docx(tmp_path: Path) -> None:
    """A real .docx: Heading styles build the path, core.xml gives the title."""
    path = make_docx(
        tmp_path / "policy.docx",
        [
            ("Title", "Ignored Because Core Wins"),
            ("Heading1", "Scope"),
            ("", "Applies to staff."),
            ("Heading2", "Exceptions"),
            ("", "None at all."),
        ],
        title="Travel Policy",
    )
    doc = load_file(path)
    assert doc.title == "Travel Policy"
    assert [(s.heading, s.text) for s in doc.sections] == [
        (("Scope",), "Applies to staff."),
        (("Scope", "Exceptions"), "None at all."),
    ]


def test_docx_title_style_without_core(tmp_path: Path) -> None:
    """Without core properties, the paragraph styled Title is the title."""
    path = make_docx(tmp_path / "memo.docx", [("Title", "Memo Title"), ("", "Body text.")])
    assert load_file(path).title == "Memo Title"


def test_pdf(tmp_path: Path) -> None:
    """A real PDF: text is extracted and the metadata title used."""
    path = make_pdf(tmp_path / "manual.pdf", ["Circuit breakers protect calls.", "Redis shares state."], title="Manual")
    doc = load_file(path)
    assert doc.title == "Manual"
    text = " ".join(s.text for s in doc.sections)
    assert "Circuit breakers protect calls." in text
    assert "Redis shares state." in text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.docx", b"PK\x03\x04 this is not a zip", "corrupt .docx"),
        ("broken.pdf", b"%PDF-1.4\n garbage without objects", "PDF"),
        ("binary.txt", b"abc\x00\x01\x02", "binary"),
        ("bad.md", b"\x81\x8d\x8f\x90\x9d" * 3, "not UTF-8"),
        ("image.png", b"\x89PNG", "unsupported file type"),
    ],
)
def test_corrupt_files_raise_ingest_error(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    """Unreadable content raises IngestError naming the file and the reason."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(IngestError, match=reason) as info:
        load_file(path)
    assert name in str(info.value)
    assert info.value.path.endswith(name)


def test_docx_without_document_part(tmp_path: Path) -> None:
    """A zip that is not a Word document says so."""
    path = tmp_path / "fake.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(IngestError, match=r"no word/document\.xml"):
        load_file(path)


def test_pdf_without_text(tmp_path: Path) -> None:
    """A PDF with pages but no text (a scan) is reported, not silently indexed as empty."""
    path = make_pdf(tmp_path / "scan.pdf", [])
    with pytest.raises(IngestError, match="no extractable text"):
        load_file(path)


def test_missing_file(tmp_path: Path) -> None:
    """A file that cannot be opened raises IngestError, not OSError."""
    with pytest.raises(IngestError, match="cannot read"):
        load_file(tmp_path / "nope.md")


def test_parse_bytes_defaults_ids() -> None:
    """doc_id defaults to the name and source to the doc_id; sha256 is of the bytes."""
    doc = parse_bytes(b"hello", name="a.txt")
    assert (doc.doc_id, doc.source) == ("a.txt", "a.txt")
    assert doc.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_folder_skips_bad_files_and_keeps_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One corrupt file is logged and reported; every other file (nested too) is ingested."""
    (tmp_path / "a.md").write_text("# A\n\nalpha text\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("bravo text\n")
    (tmp_path / "bad.docx").write_bytes(b"not a zip")
    (tmp_path / ".hidden.md").write_text("secret\n")
    (tmp_path / "ignored.csv").write_text("x,y\n")
    with caplog.at_level(logging.WARNING, logger="rag.ingest"):
        result = ingest_folder(tmp_path)
    assert [doc.doc_id for doc, _ in result.documents] == ["a.md", "sub/b.txt"]
    assert [err.path.endswith("bad.docx") for err in result.failed] == [True]
    assert any("bad.docx" in rec.getMessage() for rec in caplog.records)
    assert all(chunks for _, chunks in result.documents)


def test_folder_must_exist(tmp_path: Path) -> None:
    """Ingesting a missing folder is an IngestError."""
    with pytest.raises(IngestError, match="not a folder"):
        ingest_folder(tmp_path / "missing")
