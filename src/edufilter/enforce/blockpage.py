"""The block page: what a pupil sees instead of a blocked plain-HTTP site.

It reaches the browser in one of two ways: injected into the blocked connection as forged
server-to-client TCP segments (the request is dropped and the server reset), or served by the
block-page app to browsers that a sinkholed DNS answer sent to the block-page address.
The page is small and self-contained (inline CSS, no scripts, no external resources), in
Dutch, French, English or German after the browser's Accept-Language.
"""

from __future__ import annotations

import base64
import html
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Final

from edufilter.enforce.inject import (
    IPPROTO_TCP,
    IPPacket,
    ip_packet,
    parse_ip,
    transport_checksum,
)

LANGUAGES: Final = ("nl", "fr", "en", "de")
FALLBACK_LANGUAGE: Final = "en"
BLOCKED_STATUS: Final = HTTPStatus.FORBIDDEN
NEUTRAL_STATUS: Final = HTTPStatus.NOT_FOUND


def new_reference() -> str:
    """8 random base32 characters (40 bits): a code for the block page that finds one event.

    Random rather than derived from the event, so that a worker (which has no pseudonym key)
    can put it on the page it injects, and so that it tells nothing about the client.
    """
    return base64.b32encode(secrets.token_bytes(5)).decode()


_TCP_FIN: Final = 0x01
_TCP_SYN: Final = 0x02
_TCP_RST: Final = 0x04
_TCP_PSH: Final = 0x08
_TCP_ACK: Final = 0x10
_TCP_OPTION_END: Final = 0
_TCP_OPTION_NOP: Final = 1
_TCP_OPTION_TIMESTAMPS: Final = 8
_TCP_HEADER: Final = struct.Struct("!HHIIHHHH")
_TCP_CHECKSUM_OFFSET: Final = 16
_FORGED_WINDOW: Final = 0xFFFF

# Longest text taken from a request or the policy into the page, so it stays a few KB.
_MAX_NAME_CHARS: Final = 253
_MAX_FIELD_CHARS: Final = 120



@dataclass(frozen=True, slots=True)
class BlockInfo:
    """Why a request was blocked, as the page tells it."""

    name: str  # the site (host name) as requested
    category_id: str
    category_title: str
    group_title: str
    action: str
    reference: str  # a short code the ICT coordinator looks up in the event log
    time: datetime
    group_name: str = ""  # the group's id, sent back by the review form


@dataclass(frozen=True, slots=True)
class _Texts:
    title: str
    lead: str  # {site}
    category: str
    group: str
    reference: str
    time: str
    next_steps_title: str
    next_steps: str  # {reference}
    neutral_title: str
    neutral_text: str
    evasion_title: str  # the category of a request that hid its site (reason evasion)
    evasion_text: str


# The category of blocks whose reason is a circumvention attempt (daemon.worker REASON_CATEGORIES).
EVASION_CATEGORY: Final = "evasion"
# Pupils are addressed informally, as teachers in these languages usually do.
_TEXTS: Final[dict[str, _Texts]] = {
    "nl": _Texts(
        title="Deze website is geblokkeerd",
        lead="De website {site} is geblokkeerd op het schoolnetwerk.",
        category="Categorie",
        group="Groep",
        reference="Referentie",
        time="Tijdstip",
        next_steps_title="Wat kun je doen?",
        next_steps=(
            "Heb je deze website nodig voor school? Vraag het aan je leerkracht of aan de "
            "ICT-coördinator en geef de referentie {reference} door."
        ),
        neutral_title="Schoolnetwerk",
        neutral_text=(
            "Hier is niets te zien. Deze pagina meldt websites die het "
            "schoolnetwerk blokkeert."
        ),
        evasion_title="Verborgen website",
        evasion_text=(
            "Dit verzoek verborg voor welke website het was (geen of twee verschillende namen, of"
            " een vorm die de server anders leest): het schoolnetwerk laat zulke verzoeken niet "
            "door."
        ),
    ),
    "fr": _Texts(
        title="Ce site est bloqué",
        lead="Le site {site} est bloqué sur le réseau de l’école.",
        category="Catégorie",
        group="Groupe",
        reference="Référence",
        time="Heure",
        next_steps_title="Que faire ?",
        next_steps=(
            "Tu as besoin de ce site pour l’école ? Demande à ton enseignant ou au "
            "coordinateur TIC et donne-lui la référence {reference}."
        ),
        neutral_title="Réseau de l’école",
        neutral_text=(
            "Il n’y a rien à voir ici. Cette page signale les sites que le réseau "
            "de l’école bloque."
        ),
        evasion_title="Site masqué",
        evasion_text=(
            "Cette demande cachait le site visé (aucun nom, deux noms différents, ou une forme "
            "que le serveur lit autrement) : le réseau de l’école bloque ces demandes."
        ),
    ),
    "en": _Texts(
        title="This website is blocked",
        lead="The website {site} is blocked on the school network.",
        category="Category",
        group="Group",
        reference="Reference",
        time="Time",
        next_steps_title="What can you do?",
        next_steps=(
            "Do you need this website for school work? Ask your teacher or the ICT "
            "coordinator and quote the reference {reference}."
        ),
        neutral_title="School network",
        neutral_text=(
            "There is nothing to see here. This page reports websites that the "
            "school network blocks."
        ),
        evasion_title="Hidden site",
        evasion_text=(
            "This request hid which website it was for (no name, two different names, or a form "
            "the server reads differently): the school network blocks such requests."
        ),
    ),
    "de": _Texts(
        title="Diese Website ist gesperrt",
        lead="Die Website {site} ist im Schulnetz gesperrt.",
        category="Kategorie",
        group="Gruppe",
        reference="Referenz",
        time="Zeitpunkt",
        next_steps_title="Was kannst du tun?",
        next_steps=(
            "Brauchst du diese Website für die Schule? Frag deine Lehrkraft oder die "
            "IT-Koordination und nenne die Referenz {reference}."
        ),
        neutral_title="Schulnetz",
        neutral_text=(
            "Hier gibt es nichts zu sehen. Diese Seite meldet Websites, die das "
            "Schulnetz sperrt."
        ),
        evasion_title="Verborgene Website",
        evasion_text=(
            "Diese Anfrage verbarg, für welche Website sie war (kein Name, zwei verschiedene "
            "Namen oder eine Form, die der Server anders liest): Das Schulnetz sperrt solche "
            "Anfragen."
        ),
    ),
}

_STYLE: Final = (
    "body{margin:0;background:#f3f5f8;color:#1d2733;font:16px/1.5 system-ui,sans-serif}"
    "main{max-width:36rem;margin:8vh auto;padding:2rem;background:#fff;border-radius:12px;"
    "border-top:6px solid #d9822b;box-shadow:0 2px 10px rgba(0,0,0,.08)}"
    "h1{font-size:1.6rem;margin:0 0 1rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:1rem 0}"
    "dt{color:#5b6775}dd{margin:0;overflow-wrap:anywhere}"
    "strong,code{overflow-wrap:anywhere}code{background:#eef1f5;padding:.1rem .3rem;"
    "border-radius:4px;font-size:1.05em}"
)

_PAGE: Final = (
    '<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    '<meta name="robots" content="noindex"><title>{title}</title><style>{style}</style>'
    "</head><body><main>{content}</main></body></html>\n"
)

# No scripts, no external resources: the browser is told so as well.
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# --- the review form ("this should not be blocked") and the answers to it --------------------

MAX_REASON_CHARS: Final = 500


@dataclass(frozen=True, slots=True)
class _ReviewTexts:
    title: str
    reason: str
    reason_hint: str
    button: str
    sent: str
    too_many: str
    refused: str
    unavailable: str


# No name is asked for and the hint says not to give one: the request carries no pupil identity.
_REVIEW_TEXTS: Final[dict[str, _ReviewTexts]] = {
    "nl": _ReviewTexts(
        "Is dit ten onrechte geblokkeerd?", "Waarom heb je deze website nodig? (niet verplicht)",
        "Schrijf je naam niet op. Je leerkracht of de ICT-coördinator bekijkt je vraag.",
        "Dit zou niet geblokkeerd mogen zijn",
        "Je vraag is verstuurd. Je leerkracht of de ICT-coördinator bekijkt ze.",
        "Je hebt al veel vragen gestuurd. Probeer het later opnieuw.",
        "Deze vraag kon niet verstuurd worden: ze hoort niet bij een blokkering van dit netwerk.",
        "Vragen kunnen nu niet verstuurd worden. Vraag het rechtstreeks aan je leerkracht.",
    ),
    "fr": _ReviewTexts(
        "Ce blocage est une erreur ?", "Pourquoi as-tu besoin de ce site ? (facultatif)",
        "N’écris pas ton nom. Ton enseignant ou le coordinateur TIC examinera ta demande.",
        "Ce site ne devrait pas être bloqué",
        "Ta demande est envoyée. Ton enseignant ou le coordinateur TIC l’examinera.",
        "Tu as déjà envoyé beaucoup de demandes. Réessaie plus tard.",
        "Cette demande n’a pas pu être envoyée : elle ne correspond à aucun blocage de ce réseau.",
        "Les demandes ne peuvent pas être envoyées pour le moment. Demande directement à ton enseignant.",
    ),
    "en": _ReviewTexts(
        "Blocked by mistake?", "Why do you need this website? (optional)",
        "Do not write your name. Your teacher or the ICT coordinator will look at your request.",
        "This should not be blocked",
        "Your request was sent. Your teacher or the ICT coordinator will look at it.",
        "You have sent many requests already. Try again later.",
        "This request could not be sent: it does not belong to a block on this network.",
        "Requests cannot be sent right now. Ask your teacher directly.",
    ),
    "de": _ReviewTexts(
        "Zu Unrecht gesperrt?", "Wofür brauchst du diese Website? (freiwillig)",
        "Schreib deinen Namen nicht dazu. Deine Lehrkraft oder die IT-Koordination prüft deine Anfrage.",
        "Das sollte nicht gesperrt sein",
        "Deine Anfrage wurde gesendet. Deine Lehrkraft oder die IT-Koordination prüft sie.",
        "Du hast schon viele Anfragen gesendet. Versuch es später noch einmal.",
        "Diese Anfrage konnte nicht gesendet werden: Sie gehört zu keiner Sperre in diesem Netz.",
        "Anfragen können gerade nicht gesendet werden. Frag direkt deine Lehrkraft.",
    ),
}
REVIEW_FIELDS: Final = ("site", "category", "group", "reference", "reason")
_FORM_STYLE: Final = (
    "form{margin-top:1.5rem;border-top:1px solid #dde3ea;padding-top:1rem}label{display:block;"
    "font-weight:600}textarea{width:100%;box-sizing:border-box;font:inherit;margin:.3rem 0}"
    ".hint{color:#5b6775;font-size:.9rem;margin:0 0 .6rem}button{font:inherit;padding:.5rem 1rem;"
    "border:0;border-radius:6px;background:#1f5fa8;color:#fff;cursor:pointer}"
    "button:focus,textarea:focus{outline:3px solid #d9822b;outline-offset:2px}"
)


def _review_form(info: BlockInfo, texts: _ReviewTexts, action: str) -> str:
    hidden = (("site", info.name, _MAX_NAME_CHARS), ("category", info.category_id, _MAX_FIELD_CHARS),
              ("group", info.group_name, _MAX_FIELD_CHARS), ("reference", info.reference, _MAX_FIELD_CHARS))
    return (
        f'<form method="post" action="{html.escape(action, quote=True)}"><h2>{html.escape(texts.title)}</h2>'
        + "".join(f'<input type="hidden" name="{name}" value="{_escaped(value, limit)}">'
                  for name, value, limit in hidden)
        + f'<label for="reason">{html.escape(texts.reason)}</label>'
        f'<textarea id="reason" name="reason" rows="3" maxlength="{MAX_REASON_CHARS}" '
        f'aria-describedby="reason-hint"></textarea><p id="reason-hint" class="hint">'
        f"{html.escape(texts.reason_hint)}</p><button type=\"submit\">{html.escape(texts.button)}</button></form>"
    )


def review_url(address: str, port: int) -> str:
    """The block-page server's review URL at an address: what an injected page's form posts to."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}{'' if port == 80 else f':{port}'}/review"


def render_review_answer(
    outcome: str, accept_language: str | None, default_language: str = FALLBACK_LANGUAGE
) -> tuple[int, dict[str, str], bytes]:
    """The page answering the review form; outcome is sent, too_many, refused or unavailable."""
    statuses = {"sent": HTTPStatus.ACCEPTED, "too_many": HTTPStatus.TOO_MANY_REQUESTS,
                "refused": HTTPStatus.BAD_REQUEST, "unavailable": HTTPStatus.SERVICE_UNAVAILABLE}
    language = choose_language(accept_language, default_language)
    texts, review = _TEXTS[language], _REVIEW_TEXTS[language]
    message = getattr(review, outcome)
    content = f"<h1>{html.escape(review.title)}</h1><p role=\"status\">{html.escape(message)}</p>"
    return statuses[outcome], _headers(language), _page(language, texts.neutral_title, content)


def choose_language(
    accept_language: str | None, default_language: str = FALLBACK_LANGUAGE
) -> str:
    """The page language for an Accept-Language header (RFC 9110 section 12.5.4).

    Ranges are tried by descending q (q=0 excluded), by primary subtag (nl-BE is nl). No header,
    or only "*", gives default_language; a header naming none of our languages gives English.
    """
    if default_language not in LANGUAGES:
        raise ValueError(f"default language {default_language!r} is not one of {LANGUAGES}")
    preferences = _parse_accept_language(accept_language or "")
    for language_range in preferences:
        if language_range == "*":
            return default_language
        primary = language_range.split("-", 1)[0]
        if primary in LANGUAGES:
            return primary
    return FALLBACK_LANGUAGE if preferences else default_language


def _parse_accept_language(header: str) -> list[str]:
    weighted = []
    for position, item in enumerate(header.split(",")):
        language_range, *parameters = (part.strip() for part in item.split(";"))
        if not language_range:
            continue
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if 0.0 < quality <= 1.0:
            weighted.append((-quality, position, language_range.lower()))
    return [language_range for _, _, language_range in sorted(weighted)]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escaped(text: str, limit: int = _MAX_FIELD_CHARS) -> str:
    return html.escape(_clip(text, limit), quote=True)


def render_block_page(
    info: BlockInfo, accept_language: str | None, default_language: str = FALLBACK_LANGUAGE,
    review_action: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and HTML body of the block page for info.

    With review_action (the URL of the block-page server's /review), the page carries the
    "this should not be blocked" form posting there, and the CSP allows that one target only.
    """
    language = choose_language(accept_language, default_language)
    texts = _TEXTS[language]
    site = f"<strong><bdi>{_escaped(info.name, _MAX_NAME_CHARS)}</bdi></strong>"
    reference = f"<code>{_escaped(info.reference)}</code>"
    evasion = info.category_id == EVASION_CATEGORY
    rows = (
        (texts.category, _escaped(texts.evasion_title if evasion else info.category_title)),
        (texts.group, _escaped(info.group_title)),
        (texts.reference, reference),
        (texts.time, _escaped(f"{info.time:%Y-%m-%d %H:%M}")),
    )
    content = (
        f"<h1>{html.escape(texts.title)}</h1>"
        f"<p>{html.escape(texts.lead).format(site=site)}</p>"
        "<dl>"
        + "".join(f"<dt>{html.escape(label)}</dt><dd>{value}</dd>" for label, value in rows)
        + "</dl>"
        + (f"<p>{html.escape(texts.evasion_text)}</p>" if evasion else "")
        + f"<h2>{html.escape(texts.next_steps_title)}</h2>"
        f"<p>{html.escape(texts.next_steps).format(reference=reference)}</p>"
    )
    if review_action is None:
        return BLOCKED_STATUS, _headers(language), _page(language, texts.title, content)
    content += _review_form(info, _REVIEW_TEXTS[language], review_action)
    headers = _headers(language)
    target = "'self'" if review_action.startswith("/") else review_action
    headers["Content-Security-Policy"] += f"; form-action {target}"
    return BLOCKED_STATUS, headers, _page(language, texts.title, content, _STYLE + _FORM_STYLE)


def render_neutral_page(
    accept_language: str | None, default_language: str = FALLBACK_LANGUAGE
) -> tuple[int, dict[str, str], bytes]:
    """The page for a request at the block-page address that no block explains."""
    language = choose_language(accept_language, default_language)
    texts = _TEXTS[language]
    content = (
        f"<h1>{html.escape(texts.neutral_title)}</h1><p>{html.escape(texts.neutral_text)}</p>"
    )
    return NEUTRAL_STATUS, _headers(language), _page(language, texts.neutral_title, content)


def _page(language: str, title: str, content: str, style: str = _STYLE) -> bytes:
    page = _PAGE.format(lang=language, title=html.escape(title), style=style, content=content)
    # aiohttp decodes undecodable header bytes to lone surrogates: they become "?" here.
    return page.encode("utf-8", "replace")


def _headers(language: str) -> dict[str, str]:
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Language": language,
        "Cache-Control": "no-store",
        "Vary": "Accept-Language",
        **_SECURITY_HEADERS,
    }


def http_response(status: int, headers: Mapping[str, str], body: bytes) -> bytes:
    """An HTTP/1.1 response with Content-Length and Connection: close."""
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(head).encode("ascii") + body


# --- forged TCP segments --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TcpSegment:
    ip: IPPacket
    source_port: int
    destination_port: int
    seq: int
    ack: int
    flags: int
    payload_length: int
    timestamps: tuple[int, int] | None  # TSval, TSecr (RFC 7323)


def _parse_established_segment(packet: bytes) -> _TcpSegment | None:
    """A TCP segment of an established connection (ACK set, no SYN or RST)."""
    ip = parse_ip(packet)
    if ip is None or ip.protocol != IPPROTO_TCP or len(ip.transport) < 20:
        return None
    source_port, destination_port, seq, ack, offset_flags, *_ = _TCP_HEADER.unpack_from(
        ip.transport
    )
    header_length = (offset_flags >> 12) * 4
    flags = offset_flags & 0x01FF
    if not 20 <= header_length <= len(ip.transport):
        return None
    if not flags & _TCP_ACK or flags & (_TCP_SYN | _TCP_RST):
        return None
    return _TcpSegment(
        ip=ip,
        source_port=source_port,
        destination_port=destination_port,
        seq=seq,
        ack=ack,
        flags=flags,
        payload_length=len(ip.transport) - header_length,
        timestamps=_timestamps(ip.transport[20:header_length]),
    )


def _timestamps(options: bytes) -> tuple[int, int] | None:
    index = 0
    while index < len(options):
        kind = options[index]
        if kind == _TCP_OPTION_END:
            return None
        if kind == _TCP_OPTION_NOP:
            index += 1
            continue
        if index + 1 >= len(options) or options[index + 1] < 2:
            return None
        length = options[index + 1]
        if kind == _TCP_OPTION_TIMESTAMPS and length == 10 and index + 10 <= len(options):
            tsval, tsecr = struct.unpack_from("!II", options, index + 2)
            return tsval, tsecr
        index += length
    return None


def _tcp_packet(
    request: _TcpSegment,
    towards_client: bool,
    seq: int,
    ack: int,
    flags: int,
    options: bytes,
    payload: bytes,
    window: int,
) -> bytes:
    ip = request.ip
    if towards_client:
        source, destination = ip.destination, ip.source
        source_port, destination_port = request.destination_port, request.source_port
    else:
        source, destination = ip.source, ip.destination
        source_port, destination_port = request.source_port, request.destination_port
    offset_flags = (5 + len(options) // 4) << 12 | flags
    header = _TCP_HEADER.pack(
        source_port, destination_port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset_flags,
        window, 0, 0,
    )  # fmt: skip
    segment = header + options + payload
    checksum = transport_checksum(ip.version, source, destination, IPPROTO_TCP, segment)
    at = _TCP_CHECKSUM_OFFSET
    segment = segment[:at] + struct.pack("!H", checksum) + segment[at + 2 :]
    return ip_packet(ip.version, source, destination, IPPROTO_TCP, segment)


def block_response_segments(
    request_packet: bytes,
    page: bytes,
    mss: int = 1200,
    status: int = BLOCKED_STATUS,
    headers: Mapping[str, str] | None = None,
) -> list[bytes]:
    """Forged server-to-client segments carrying an HTTP/1.1 response with body page.

    request_packet is the client's segment that completes the request head; the worker drops
    it, so the segments acknowledge it, start at the sequence number the client expects from
    the server and end with FIN. mss bounds the bytes after the TCP header (timestamps, echoed
    when the client uses them, included). headers default to those of render_block_page.
    An empty list when request_packet is not a segment of an established TCP connection.
    """
    request = _parse_established_segment(request_packet)
    if request is None:
        return []
    if headers is None:
        headers = _headers(FALLBACK_LANGUAGE)
    response = http_response(status, headers, page)
    options = b""
    if request.timestamps is not None:
        # TSval = the client's latest TSecr passes its PAWS check (RFC 7323 section 5).
        tsval, tsecr = request.timestamps
        options = struct.pack(
            "!BBBBII", _TCP_OPTION_NOP, _TCP_OPTION_NOP, _TCP_OPTION_TIMESTAMPS, 10, tsecr, tsval
        )
    chunk = max(mss - len(options), 1)
    client_next = request.seq + request.payload_length + (1 if request.flags & _TCP_FIN else 0)
    segments = []
    for offset in range(0, len(response), chunk):
        payload = response[offset : offset + chunk]
        last = offset + chunk >= len(response)
        flags = _TCP_ACK | _TCP_PSH | (_TCP_FIN if last else 0)
        segments.append(
            _tcp_packet(
                request, towards_client=True, seq=request.ack + offset, ack=client_next,
                flags=flags, options=options, payload=payload, window=_FORGED_WINDOW,
            )  # fmt: skip
        )
    return segments


def reset_to_server(request_packet: bytes) -> bytes | None:
    """A client-to-server RST that makes the server forget the connection, or None.

    Its sequence number is the request segment's own: the server never got that segment, so
    this is exactly the next byte it expects, which RFC 5961 requires for a reset to count.
    """
    request = _parse_established_segment(request_packet)
    if request is None:
        return None
    return _tcp_packet(
        request, towards_client=False, seq=request.seq, ack=request.ack,
        flags=_TCP_RST | _TCP_ACK, options=b"", payload=b"", window=0,
    )  # fmt: skip
