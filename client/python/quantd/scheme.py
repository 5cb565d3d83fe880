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

A method may follow a "+" (when the proto has Scheme.method), with optional
parameters in parentheses: "int4_asym_g128+gptq",
"int4_g128+gptq(act_order,static_groups,damp=0.05,block=64)",
"int3_g128+awq(grid=10,noclip)", "int8+smoothquant(alpha=0.5)"; "+rtn" is
the default. GPTQ, AWQ and SmoothQuant need the tensor's calibration set.
"""
from __future__ import annotations

import re
from typing import Union

from quantd._pb import has_field, pb

__all__ = ["parse_scheme", "scheme_name", "SchemeLike"]

SchemeLike = Union[str, "pb.Scheme"]

_INT = re.compile(r"int(?P<bits>[0-9]+)(?P<rest>(_[A-Za-z0-9]+)*)")
_BLOCK = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*")
_METHOD = re.compile(r"(?P<name>[a-z]+)(\((?P<params>[^()]*)\))?")
_METHODS = ("rtn", "gptq", "awq", "smoothquant")


def _parse_method(out: "pb.Scheme", text: str, scheme: str) -> None:
    """Sets out.method and its parameters from "gptq(act_order,damp=0.05)"."""
    m = _METHOD.fullmatch(text.strip().lower())
    if m is None or m.group("name") not in _METHODS:
        raise ValueError(f"malformed scheme {scheme!r}: unknown method {text!r} "
                         f"(expected one of {', '.join(_METHODS)})")
    if not has_field(pb.Scheme, "method"):
        raise ValueError(f"scheme {scheme!r}: this quantd package was built from "
                         "a proto without Scheme.method")
    name = m.group("name")
    out.method = getattr(pb, f"QUANT_METHOD_{name.upper()}")
    params = [p.strip() for p in (m.group("params") or "").split(",") if p.strip()]
    for param in params:
        key, _, value = param.partition("=")
        try:
            if name == "gptq" and key == "act_order" and not value:
                out.gptq.act_order = True
            elif name == "gptq" and key == "static_groups" and not value:
                out.gptq.static_groups = True
            elif name == "gptq" and key == "damp" and value:
                out.gptq.damp_percent = float(value)
            elif name == "gptq" and key == "block" and value:
                out.gptq.block_size = int(value)
            elif name == "awq" and key == "grid" and value:
                out.awq.n_grid = int(value)
            elif name == "awq" and key == "noclip" and not value:
                out.awq.no_clip_search = True
            elif name == "smoothquant" and key == "alpha" and value:
                out.smoothquant.alpha = float(value)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"malformed scheme {scheme!r}: bad {name} parameter "
                             f"{param!r}") from None


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
    text, plus, method = scheme.strip().partition("+")
    if plus:
        out = parse_scheme(text)
        if is_block_format(out):
            raise ValueError(f"malformed scheme {scheme!r}: a block format takes "
                             "no method")
        _parse_method(out, method, scheme)
        return out
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
    return scheme.format + symmetry + granularity + _method_suffix(scheme)


def _method_suffix(scheme: "pb.Scheme") -> str:
    """"+gptq(act_order)" and the like; "" for RTN or an older proto."""
    if not has_field(pb.Scheme, "method") or scheme.method in (
            pb.QUANT_METHOD_UNSPECIFIED, pb.QUANT_METHOD_RTN):
        return ""
    name = pb.QuantMethod.Name(scheme.method)[len("QUANT_METHOD_"):].lower()
    params = []
    if name == "gptq":
        g = scheme.gptq
        if g.act_order:
            params.append("act_order")
        if g.static_groups:
            params.append("static_groups")
        if g.HasField("damp_percent") and g.damp_percent != 0.01:
            params.append(f"damp={g.damp_percent:g}")
        if g.block_size not in (0, 128):
            params.append(f"block={g.block_size}")
    elif name == "awq":
        if scheme.awq.n_grid not in (0, 20):
            params.append(f"grid={scheme.awq.n_grid}")
        if scheme.awq.no_clip_search:
            params.append("noclip")
    elif name == "smoothquant" and scheme.smoothquant.alpha:
        params.append(f"alpha={scheme.smoothquant.alpha:g}")
    return f"+{name}" + (f"({','.join(params)})" if params else "")
