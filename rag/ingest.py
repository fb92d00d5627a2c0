"""Turn files into titled, heading-aware chunks ready for indexing.

Pipeline: bytes -> blocks (headings and paragraphs, per format) -> a :class:`Document` (title plus
sections, each with its heading path) -> :class:`Chunk` objects of about 200-300 words.

Invariants:
- Parsing is pure: no index, no global state; a file's :class:`Document` depends only on its bytes,
  its name and its ``doc_id``.
- Every failure to read or parse one file raises :class:`IngestError` naming the file and the reason;
  :func:`ingest_folder` catches it per file, logs a warning and reports it, and keeps every other file.
- A chunk never spans two sections, so its heading path is exact. Consecutive chunks of one section
  share about :data:`DEFAULT_OVERLAP` of their words (whole sentences where possible).
- ``chunk_id`` is ``f"{doc_id}#{n}"`` with ``n`` counting from 0 in document order.
- :data:`CHUNKER_VERSION` changes whenever the chunking of the same bytes would change, so that an
  index can tell stale chunks from current ones.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

__all__ = [
    "CHUNKER_VERSION",
    "DEFAULT_MAX_WORDS",
    "DEFAULT_OVERLAP",
    "DEFAULT_TARGET_WORDS",
    "SUPPORTED_SUFFIXES",
    "Chunk",
    "Document",
    "FolderIngest",
    "IngestError",
    "Section",
    "chunk_document",
    "ingest_folder",
    "iter_files",
    "load_file",
    "parse_bytes",
]

logger = logging.getLogger(__name__)

DEFAULT_TARGET_WORDS = 250
DEFAULT_MAX_WORDS = 300
DEFAULT_OVERLAP = 0.15
# A section shorter than this is folded into the next one when that one is nested below it, so a
# one-line introduction under a heading does not become a chunk of its own.
MIN_SECTION_WORDS = 40
MAX_FILE_BYTES = 50 * 1024 * 1024
CHUNKER_VERSION = "1"
SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm", ".docx", ".pdf"})


class IngestError(Exception):
    """A file could not be read or parsed.

    Args:
        path: the file (its name or path as given).
        reason: what went wrong, for a person to read.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path (``()`` for text before the first heading)."""

    heading: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed source file.

    Args:
        doc_id: stable id (the path relative to the knowledge folder, with ``/`` separators).
        title: the document's title (first-level heading, metadata title, or the file name).
        source: what a citation shows as the origin (the path relative to the folder, or the file name).
        sections: the text, in order, each part with its heading path.
        sha256: hex digest of the file's bytes (what incremental re-sync compares).
    """

    doc_id: str
    title: str
    source: str
    sections: tuple[Section, ...]
    sha256: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document, the unit of retrieval."""

    doc_id: str
    chunk_id: str
    title: str
    heading: str
    text: str

    @property
    def indexed_text(self) -> str:
        """The text a retriever should match: title and heading path first, then the chunk body."""
        head = f"{self.title} > {self.heading}" if self.heading else self.title
        return f"{head}\n\n{self.text}"


@dataclass(slots=True)
class FolderIngest:
    """What :func:`ingest_folder` produced: parsed documents with their chunks, and the failures."""

    documents: list[tuple[Document, list[Chunk]]] = field(default_factory=list)
    failed: list[IngestError] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Blocks: the format-neutral shape every parser produces.


@dataclass(frozen=True, slots=True)
class _Heading:
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class _Para:
    text: str


_Block = _Heading | _Para
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _humanize(stem: str) -> str:
    words = re.sub(r"[_\-]+", " ", stem).strip()
    return words[:1].upper() + words[1:] if words else stem


def _to_document(blocks: list[_Block], *, doc_id: str, source: str, title: str | None, sha256: str) -> Document:
    """Build the title and the sections (each with its heading path) from format-neutral blocks."""
    h1 = [b for b in blocks if isinstance(b, _Heading) and b.level == 1]
    first_heading = next((b for b in blocks if isinstance(b, _Heading)), None)
    # A lone leading H1 is the title (not a path element) unless metadata names a different title.
    drop_h1 = len(h1) == 1 and first_heading is h1[0] and (not title or _clean(title).lower() == h1[0].text.lower())
    if drop_h1 and not title:
        title = h1[0].text
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    current: list[str] = []

    def flush() -> None:
        text = "\n\n".join(p for p in current if p)
        if text.strip():
            sections.append(Section(tuple(t for _, t in path), text))
        current.clear()

    for block in blocks:
        if isinstance(block, _Heading):
            if drop_h1 and block.level == 1:
                flush()
                continue
            flush()
            while path and path[-1][0] >= block.level:
                path.pop()
            path.append((block.level, block.text))
        else:
            current.append(block.text)
    flush()
    return Document(
        doc_id=doc_id,
        title=_clean(title or "") or _humanize(Path(doc_id).stem),
        source=source,
        sections=tuple(sections),
        sha256=sha256,
    )


# --------------------------------------------------------------------------------------------------
# Per-format parsers: bytes -> (blocks, metadata title or None).


def _decode_text(data: bytes, name: str) -> str:
    if b"\x00" in data[:8192]:
        raise IngestError(name, "binary data in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise IngestError(name, f"not UTF-8 or Windows-1252 text ({exc.reason} at byte {exc.start})") from None


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def _markdown_blocks(text: str) -> tuple[list[_Block], str | None]:
    lines = text.splitlines()
    meta_title: str | None = None
    if lines and lines[0].strip() == "---":  # YAML front matter: only its title is used
        for end in range(1, len(lines)):
            if lines[end].strip() in ("---", "..."):
                for line in lines[1:end]:
                    key, _, value = line.partition(":")
                    if key.strip().lower() == "title" and value.strip():
                        meta_title = value.strip().strip("\"'")
                lines = lines[end + 1 :]
                break
    blocks: list[_Block] = []
    para: list[str] = []
    fence: str | None = None

    def end_para() -> None:
        if para:
            # List items keep their own lines; prose lines are re-flowed into one paragraph.
            if any(_LIST_ITEM.match(p) for p in para):
                blocks.append(_Para("\n".join(p.strip() for p in para)))
            else:
                blocks.append(_Para(_clean(" ".join(para))))
            para.clear()

    for line in lines:
        if fence is not None:
            para.append(line)
            if line.strip().startswith(fence):
                blocks.append(_Para("\n".join(para)))
                para.clear()
                fence = None
            continue
        match = _FENCE.match(line)
        if match:
            end_para()
            fence = match.group(1)
            para.append(line)
            continue
        heading = _ATX.match(line)
        if heading:
            end_para()
            blocks.append(_Heading(len(heading.group(1)), _clean(heading.group(2))))
            continue
        if para and len(para) == 1 and _SETEXT.match(line) and not _LIST_ITEM.match(para[0]):
            blocks.append(_Heading(1 if line.strip()[0] == "=" else 2, _clean(para[0])))
            para.clear()
            continue
        if not line.strip():
            end_para()
            continue
        para.append(line)
    if fence is not None:  # an unclosed fence keeps its text
        blocks.append(_Para("\n".join(para)))
        para.clear()
    end_para()
    return blocks, meta_title


def _text_blocks(text: str) -> tuple[list[_Block], str | None]:
    paragraphs = [_clean(" ".join(p.splitlines())) for p in re.split(r"\n\s*\n", text)]
    return [_Para(p) for p in paragraphs if p], None


_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head"})
_HEADING_TAGS = {f"h{n}": n for n in range(1, 7)}


class _HtmlBlocks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[_Block] = []
        self.title: str | None = None
        self._buf: list[str] = []
        self._skip = 0
        self._in_title = False
        self._title_buf: list[str] = []
        self._heading: int | None = None

    def _flush(self) -> None:
        text = _clean(" ".join("".join(self._buf).split("\n")))
        self._buf.clear()
        if not text:
            return
        if self._heading is not None:
            self.blocks.append(_Heading(self._heading, text))
        else:
            self.blocks.append(_Para(text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _HEADING_TAGS:
            self._flush()
            self._heading = _HEADING_TAGS[tag]
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
            self.title = _clean("".join(self._title_buf)) or None
        elif tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _HEADING_TAGS:
            self._flush()
            self._heading = None
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_buf.append(data)
        elif not self._skip:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def _html_blocks(text: str) -> tuple[list[_Block], str | None]:
    parser = _HtmlBlocks()
    parser.feed(text)
    parser.close()
    return parser.blocks, parser.title


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_MAX_XML_BYTES = 100 * 1024 * 1024


def _zip_xml(archive: zipfile.ZipFile, member: str, name: str) -> ElementTree.Element:
    info = archive.getinfo(member)
    if info.file_size > _MAX_XML_BYTES:
        raise IngestError(name, f"{member} is {info.file_size} bytes uncompressed (limit {_MAX_XML_BYTES})")
    return ElementTree.fromstring(archive.read(member))


def _docx_blocks(data: bytes, name: str) -> tuple[list[_Block], str | None]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            try:
                body = _zip_xml(archive, "word/document.xml", name)
            except KeyError:
                raise IngestError(name, "not a Word document (no word/document.xml)") from None
            meta_title: str | None = None
            if "docProps/core.xml" in archive.namelist():
                node = _zip_xml(archive, "docProps/core.xml", name).find(_DC_TITLE)
                meta_title = _clean(node.text or "") if node is not None else None
    except zipfile.BadZipFile as exc:
        raise IngestError(name, f"corrupt .docx (not a valid zip archive: {exc})") from None
    except ElementTree.ParseError as exc:
        raise IngestError(name, f"corrupt .docx (bad XML: {exc})") from None
    blocks: list[_Block] = []
    for para in body.iter(f"{_W}p"):
        style_node = para.find(f"{_W}pPr/{_W}pStyle")
        style = (style_node.get(f"{_W}val") or "") if style_node is not None else ""
        parts: list[str] = []
        for node in para.iter():
            if node.tag == f"{_W}t":
                parts.append(node.text or "")
            elif node.tag == f"{_W}tab":
                parts.append(" ")
            elif node.tag in (f"{_W}br", f"{_W}cr"):
                parts.append("\n")
        text = _clean("".join(parts))
        if not text:
            continue
        level = re.fullmatch(r"(?i)heading\s?([1-9])", style)
        if style.lower() == "title":
            meta_title = meta_title or text
        elif level:
            blocks.append(_Heading(int(level.group(1)), text))
        else:
            blocks.append(_Para(text))
    return blocks, meta_title or None


def _pdf_blocks(data: bytes, name: str) -> tuple[list[_Block], str | None]:
    # pypdf is imported here so that text-only deployments never pay for it at import.
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError(name, "encrypted PDF (needs a password)")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta = reader.metadata
        meta_title = _clean(meta.title or "") if meta is not None and meta.title else None
    except IngestError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files; all mean "cannot read"
        raise IngestError(name, f"corrupt or unreadable PDF ({type(exc).__name__}: {exc})") from None
    if pages and not any(p.strip() for p in pages):
        raise IngestError(name, f"no extractable text in {len(pages)} page(s) (a scanned PDF needs OCR first)")
    blocks: list[_Block] = []
    for page in pages:
        for para in re.split(r"\n\s*\n", page):
            text = _clean(" ".join(para.splitlines()))
            if text:
                blocks.append(_Para(text))
    return blocks, meta_title


def parse_bytes(data: bytes, *, name: str, doc_id: str | None = None, source: str | None = None) -> Document:
    """Parse a file's bytes into a :class:`Document`, choosing the format by ``name``'s suffix.

    Args:
        data: the file's content.
        name: the file name (its suffix picks the parser; also used in errors).
        doc_id: the document's id (default: ``name``).
        source: the citation origin (default: ``doc_id``).
    """
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(name, f"unsupported file type {suffix or '(none)'!r}")
    if len(data) > MAX_FILE_BYTES:
        raise IngestError(name, f"file is {len(data)} bytes (limit {MAX_FILE_BYTES})")
    if suffix == ".docx":
        blocks, title = _docx_blocks(data, name)
    elif suffix == ".pdf":
        blocks, title = _pdf_blocks(data, name)
    else:
        text = _decode_text(data, name)
        if suffix in (".md", ".markdown"):
            blocks, title = _markdown_blocks(text)
        elif suffix in (".html", ".htm"):
            blocks, title = _html_blocks(text)
        else:
            blocks, title = _text_blocks(text)
    doc_id = doc_id or Path(name).name
    return _to_document(
        blocks, doc_id=doc_id, source=source or doc_id, title=title, sha256=hashlib.sha256(data).hexdigest()
    )


def load_file(path: str | Path, *, doc_id: str | None = None, source: str | None = None) -> Document:
    """Read and parse one file; raises :class:`IngestError` when it cannot be read or parsed."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(path, f"cannot read ({exc.strerror or exc})") from None
    return parse_bytes(data, name=str(path), doc_id=doc_id or path.name, source=source)


# --------------------------------------------------------------------------------------------------
# Chunking.

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def _units(text: str) -> Iterator[tuple[str, bool]]:
    """Sentences (and list lines, and code blocks) of a section, with a flag for 'starts a paragraph'."""
    for para in text.split("\n\n"):
        if para.lstrip().startswith(("```", "~~~")) or "\n" in para:
            pieces = [para] if para.lstrip().startswith(("```", "~~~")) else para.split("\n")
        else:
            pieces = _SENTENCE_END.split(para)
        for i, piece in enumerate(pieces):
            if piece.strip():
                yield piece.strip() if "\n" not in piece else piece, i == 0


def _split_long(unit: str, max_words: int) -> list[str]:
    words = unit.split()
    if len(words) <= max_words:
        return [unit]
    return [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)]


def _join(units: list[tuple[str, bool, int]]) -> str:
    out: list[str] = []
    for i, (text, starts_para, _) in enumerate(units):
        if i:
            out.append("\n\n" if starts_para else ("\n" if "\n" in text or "\n" in units[i - 1][0] else " "))
        out.append(text)
    return "".join(out)


def _chunk_section(text: str, target: int, max_words: int, overlap_words: int) -> list[str]:
    # Units are cut to leave room for an overlap prefix, so no chunk exceeds ``max_words``.
    units = [
        (piece, starts if j == 0 else False, len(piece.split()))
        for unit, starts in _units(text)
        for j, piece in enumerate(_split_long(unit, max_words - overlap_words))
    ]
    chunks: list[str] = []
    start = 0
    prefix: list[tuple[str, bool, int]] = []
    while start < len(units):
        words = sum(n for _, _, n in prefix)
        end = start
        # Always take at least one unit, so every iteration moves forward.
        while end < len(units) and (end == start or words + units[end][2] <= max_words):
            words += units[end][2]
            end += 1
            if words >= target:
                break
        chunks.append(_join(prefix + units[start:end]))
        if end >= len(units):
            break
        # The next chunk repeats the trailing whole units worth about ``overlap_words`` words.
        back, carried = end, 0
        while back - 1 > start and carried + units[back - 1][2] <= overlap_words * 1.5:
            back -= 1
            carried += units[back][2]
            if carried >= overlap_words:
                break
        if carried == 0 and overlap_words:
            # The last unit is longer than the overlap: repeat its last words instead.
            tail = units[end - 1][0].split()[-overlap_words:]
            prefix, start = [(" ".join(tail), False, len(tail))], end
        else:
            prefix, start = [], back
    return chunks


def _merge_short(sections: Iterable[Section]) -> list[Section]:
    merged: list[Section] = []
    pending: Section | None = None
    for section in sections:
        if pending is not None:
            if section.heading[: len(pending.heading)] == pending.heading:
                section = Section(section.heading, f"{pending.text}\n\n{section.text}")
            else:
                merged.append(pending)
            pending = None
        if len(section.text.split()) < MIN_SECTION_WORDS:
            pending = section
        else:
            merged.append(section)
    if pending is not None:
        merged.append(pending)
    return merged


def chunk_document(
    doc: Document,
    *,
    target_words: int = DEFAULT_TARGET_WORDS,
    max_words: int = DEFAULT_MAX_WORDS,
    overlap: float = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """Split ``doc`` into chunks of about ``target_words`` (at most ``max_words``) with ``overlap`` shared.

    Args:
        doc: the parsed document.
        target_words: a chunk closes at the first sentence boundary at or past this many words.
        max_words: hard upper bound of a chunk's words (longer sentences are cut between words).
        overlap: fraction of ``target_words`` that the next chunk of the same section repeats.
    """
    if not (0 < target_words <= max_words):
        raise ValueError(f"expected 0 < target_words <= max_words, got {target_words!r} and {max_words!r}")
    if not (0 <= overlap < 0.5):
        raise ValueError(f"overlap: expected a fraction in [0, 0.5), got {overlap!r}")
    overlap_words = round(target_words * overlap)
    chunks: list[Chunk] = []
    for section in _merge_short(doc.sections):
        heading = " > ".join(section.heading)
        for body in _chunk_section(section.text, target_words, max_words, overlap_words):
            chunks.append(
                Chunk(
                    doc_id=doc.doc_id,
                    chunk_id=f"{doc.doc_id}#{len(chunks)}",
                    title=doc.title,
                    heading=heading,
                    text=body,
                )
            )
    return chunks


def iter_files(folder: str | Path) -> Iterator[tuple[str, Path]]:
    """Supported files under ``folder`` (recursively, hidden ones skipped) as ``(doc_id, path)``, sorted."""
    root = Path(folder)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in SUPPORTED_SUFFIXES and path.is_file():
            yield rel.as_posix(), path


def ingest_folder(folder: str | Path) -> FolderIngest:
    """Parse and chunk every supported file under ``folder``; a bad file is logged, reported and skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise IngestError(root, "not a folder")
    result = FolderIngest()
    for doc_id, path in iter_files(root):
        try:
            doc = load_file(path, doc_id=doc_id)
        except IngestError as exc:
            logger.warning("rag.ingest_failed file=%s: %s", doc_id, exc.reason, extra={"file": doc_id})
            result.failed.append(exc)
            continue
        result.documents.append((doc, chunk_document(doc)))
    return result
