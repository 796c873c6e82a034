"""Query attachments: the allowed types, and the upstream's check of each attachment.

An image is ``attachment_type: image`` with ``content_type`` ``image/png`` or ``image/jpeg``
and its bytes in strict base64 (no whitespace, no line breaks). The Lightspeed Core Stack's
``Attachment`` model validator checks every attachment, and :func:`check_image` does the same,
in its order and words: the two fields agree (an image type with an image content type, or
neither), the content decodes, the image is at most ``service.max_image_attachment_bytes``
bytes decoded (the upstream's 100 MiB by default), and it starts with its format's signature
(a PNG's whole 8 bytes; the upstream looks at the first 4). Its failures are ``Value error,
...`` entries of the 422 list. Types outside the lists below pass this check and are refused
after the body's validation, as the upstream does (``Invalid attribute value``).

Nothing here imports the handlers, so the OpenAPI schemas can use the same lists.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

__all__ = [
    "ATTACHMENT_CONTENT_TYPES",
    "ATTACHMENT_TYPES",
    "IMAGE_ATTACHMENT_TYPE",
    "IMAGE_CONTENT_TYPES",
    "IMAGE_SIGNATURES",
    "check_image",
]

#: The upstream's attachment types and content types (src/constants.py), sorted.
ATTACHMENT_TYPES: Final = (
    "alert",
    "api object",
    "configuration",
    "error message",
    "event",
    "image",
    "log",
    "stack trace",
)
ATTACHMENT_CONTENT_TYPES: Final = (
    "application/json",
    "application/xml",
    "application/yaml",
    "image/jpeg",
    "image/png",
    "text/plain",
)
#: The content types of images, and the first bytes each format starts with.
IMAGE_CONTENT_TYPES: Final = ("image/jpeg", "image/png")
IMAGE_SIGNATURES: Final = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
IMAGE_ATTACHMENT_TYPE: Final = "image"


def check_image(*, attachment_type: str, content_type: str, content: str, limit: int) -> int | None:
    """The upstream's ``Attachment`` validator: the size of an image (decoded), ``None`` for
    text; raises ``ValueError`` with the upstream's words when the attachment is a bad image."""
    is_image_content = content_type in IMAGE_CONTENT_TYPES
    if is_image_content != (attachment_type == IMAGE_ATTACHMENT_TYPE):
        raise ValueError(
            "attachment_type and content_type are inconsistent: "
            f"attachment_type='{attachment_type}', content_type='{content_type}'"
        )
    if not is_image_content:
        return None
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: text that is not ASCII
        raise ValueError(f"Invalid base64 content for image attachment: {exc}") from None
    if len(data) > limit:
        raise ValueError(f"Image attachment ({len(data)} bytes) exceeds maximum allowed size ({limit} bytes)")
    if not data.startswith(IMAGE_SIGNATURES[content_type]):
        raise ValueError(f"Image content does not match declared content_type '{content_type}': invalid image data")
    return len(data)
