"""Schemes in their textual form, as quantctl and the server's ParseScheme
read them, and their wire form (quantd.v1.Scheme).

    >>> parse_scheme("int4_asym_g128")
    format: "int4"
    granularity: GRANULARITY_PER_GROUP
    group_size: 128
    <BLANKLINE>
    >>> scheme_name(parse_scheme("int8"))
    'int8_sym_channel'

Integer formats: "int<bits>[_sym|_asym][_tensor|_channel|_g<group_size>]",
symmetric and per channel by default. Any other name (a ggml block format
such as "Q4_K", "q8_0", "IQ4_NL") is passed to the server as the format; the
server, whose format table is the authority (Client.server_info().formats),
answers INVALID_ARGUMENT for a name it does not know.
"""
from __future__ import annotations

import re
from typing import Union

from quantd._pb import pb

__all__ = ["parse_scheme", "scheme_name", "SchemeLike"]

SchemeLike = Union[str, "pb.Scheme"]

_INT = re.compile(r"int(?P<bits>[0-9]+)(?P<rest>(_[A-Za-z0-9]+)*)")
_BLOCK = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*")


def parse_scheme(scheme: SchemeLike) -> "pb.Scheme":
    """The wire Scheme for a textual scheme (a pb.Scheme is returned as is).

    ValueError for a malformed integer scheme (symmetry or granularity given
    twice, a bad group size, an unknown suffix) or an empty name.
    """
    if isinstance(scheme, pb.Scheme):
        return scheme
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a str or quantd.v1.Scheme, not "
                        f"{type(scheme).__name__}")
    text = scheme.strip()
    m = _INT.fullmatch(text)
    if m is None:
        if not _BLOCK.fullmatch(text):
            raise ValueError(f"malformed scheme {scheme!r}")
        return pb.Scheme(format=text)  # a block format: the rest is ignored
    out = pb.Scheme(format=f"int{m.group('bits')}", symmetric=True,
                    granularity=pb.GRANULARITY_PER_CHANNEL)
    seen_symmetry = seen_granularity = False
    for part in m.group("rest").split("_")[1:]:
        if part in ("sym", "asym"):
            if seen_symmetry:
                raise ValueError(f"malformed scheme {scheme!r}: symmetry given twice")
            seen_symmetry = True
            out.symmetric = part == "sym"
            continue
        if seen_granularity:
            raise ValueError(f"malformed scheme {scheme!r}: unexpected {part!r}")
        seen_granularity = True
        if part == "tensor":
            out.granularity = pb.GRANULARITY_PER_TENSOR
        elif part == "channel":
            out.granularity = pb.GRANULARITY_PER_CHANNEL
        elif re.fullmatch(r"g[0-9]+", part) and int(part[1:]) >= 1:
            out.granularity = pb.GRANULARITY_PER_GROUP
            out.group_size = int(part[1:])
        else:
            raise ValueError(
                f"malformed scheme {scheme!r}: unexpected {part!r} "
                "(expected sym, asym, tensor, channel or g<N>)")
    return out


def is_block_format(scheme: "pb.Scheme") -> bool:
    """Whether the scheme names a format other than the integer ones."""
    return _INT.fullmatch(scheme.format) is None


def scheme_name(scheme: "pb.Scheme") -> str:
    """The canonical text of a Scheme: "int4_asym_g128", "int8_sym_channel",
    or the format name of a block format ("Q4_K")."""
    if is_block_format(scheme):
        return scheme.format
    symmetry = "_sym" if scheme.symmetric else "_asym"
    g = scheme.granularity
    if g == pb.GRANULARITY_PER_TENSOR:
        granularity = "_tensor"
    elif g == pb.GRANULARITY_PER_GROUP:
        granularity = f"_g{scheme.group_size}"
    else:
        granularity = "_channel"
    return scheme.format + symmetry + granularity
