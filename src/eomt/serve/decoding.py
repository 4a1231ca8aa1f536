"""Request bodies -> RGB images, refusing what must not reach the model: bodies over the size limit (413),
images over the pixel limit (413, checked from the header before any pixel is decoded: decompression bombs),
bodies that are no image (415) and images that cannot be used (422).

An image is read exactly as `eomt predict` reads a file (EXIF orientation applied, every mode to RGB), so that
the service's results equal `Segmenter.predict` on the same file.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from ..processing.image_io import ImageError, check_size, to_rgb_pil

# Content types sent with a raw image body; anything else but multipart/form-data is refused (415).
RAW_TYPES = ("application/octet-stream", "")
MULTIPART_FIELD = "image"


class RequestError(Exception):
    """A request the service refuses: the HTTP status and a one-line reason (sent as {"error": reason})."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def check_content_type(content_type: str | None) -> None:
    """415 unless the body is an image (image/*, octet-stream or no type) or a multipart form."""
    kind = media_type(content_type)
    if kind.startswith("image/") or kind in RAW_TYPES or kind == "multipart/form-data":
        return
    raise RequestError(415, f"Content-Type {kind!r} is not an image: send the image file as the body "
                            f"(Content-Type image/jpeg, image/png, ...) or as the multipart field {MULTIPART_FIELD!r}")


def check_length(content_length: str | None, limit: int) -> None:
    """413 at once when the declared length is over the limit (the body is then not read)."""
    if content_length is None:
        return
    try:
        length = int(content_length)
    except ValueError:
        raise RequestError(400, f"Content-Length {content_length!r} is not a number") from None
    if length > limit:
        raise RequestError(413, too_large(length, limit))


def too_large(length: int, limit: int) -> str:
    return f"body of {length} bytes is over the limit of {limit} bytes (--max-body-mb {limit / 2**20:g})"


def image_bytes(body: bytes, content_type: str | None) -> bytes:
    """The image file a request carries: the body itself, or its multipart field `image`."""
    if media_type(content_type) != "multipart/form-data":
        return body
    return multipart_field(body, content_type or "", MULTIPART_FIELD)


def multipart_field(body: bytes, content_type: str, name: str) -> bytes:
    """The bytes of the form field `name` in a multipart/form-data body (422 when it has none)."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise RequestError(422, "multipart/form-data without a boundary in its Content-Type")
    parts: list[tuple[bytes, bytearray]] = []
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    current = {"disposition": b""}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if bytes(header["field"]).lower() == b"content-disposition":
            current["disposition"] = bytes(header["value"])
        header["field"], header["value"] = bytearray(), bytearray()

    def on_part_begin() -> None:
        current["disposition"] = b""
        parts.append((b"", bytearray()))

    def on_headers_finished() -> None:
        field_name = parse_options_header(current["disposition"])[1].get(b"name", b"")
        parts[-1] = (field_name, parts[-1][1])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data})
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise RequestError(422, f"malformed multipart/form-data body ({exc})") from None
    for field_name, data in parts:
        if field_name == name.encode():
            return bytes(data)
    names = ", ".join(repr(n.decode("latin-1")) for n, _ in parts) or "none"
    raise RequestError(422, f"multipart body has no field {name!r} (fields: {names})")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """An RGB image from an image file's bytes, or RequestError (413 / 415 / 422)."""
    if not data:
        raise RequestError(422, "empty body: send an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel limit below is ours
            opened = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RequestError(415, "the body is not an image, or a format Pillow cannot read (send JPEG, PNG, "
                                "WebP, ...)") from None
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"image too large to decode safely ({exc.args[0].split('(')[0].strip()})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(422, f"unreadable image ({exc})") from None
    width, height = opened.size
    if width * height > max_pixels:
        raise RequestError(413, f"image is {width}x{height} = {width * height} pixels, over the limit of "
                                f"{max_pixels} (--max-image-pixels)")
    try:
        with opened, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(422, f"truncated or corrupt image ({exc})") from None
    try:
        check_size(image.height, image.width, "image")
    except ImageError as exc:
        raise RequestError(422, str(exc)) from None
    return to_rgb_pil(image)
