"""Schemes in their textual form, as quantctl and the server's ParseScheme
read them, and their wire form (quantd.v1.Scheme).

    >>> parse_scheme("int4_asym_g128")
    format: "int4"
    granularity: GRANULARITY_PER_GROUP
    group_size: 128
    <BLANKLINE>
    >>> scheme_name(parse_scheme("int8"))
    'int8_sym_channel'

Integer formats: "int<bits>[_sym|_asym|_full][_tensor|_channel|_g<group_size>]",
symmetric and per channel by default; "_full" is compressed-tensors'
full-range symmetric convention (scale = amax / ((2^b - 1) / 2), codes in
[-2^(b-1), 2^(b-1) - 1]; Scheme.full_range).

Float, codebook and HQQ formats: "fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "nf4",
"ocp_mxfp8", "ocp_mxfp4", "modelopt_nvfp4", "kmeans<b>", "pot<b>",
"hqq<b>", each optionally followed by "_tensor", "_channel", "_g<N>" or
"_block" (the format's default block), and "nf4" by "_dq" (double
quantization): "fp8_e4m3_channel", "fp4_e2m1_g32", "nf4_g64_dq",
"kmeans4_g128", "hqq4_g64". Without a suffix the server applies the
format's default granularity.

Any other name (a ggml block format such as "Q4_K", "q8_0", "IQ4_NL") is
passed to the server as the format; the server, whose format table is the
authority (Client.server_info().formats), answers INVALID_ARGUMENT for a
name it does not know.

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
# The float, codebook and HQQ families (Layout.kind FLOAT, CODEBOOK, HQQ).
_FAMILY = re.compile(r"(?P<format>fp8_e4m3|fp8_e5m2|fp4_e2m1|nf4|ocp_mxfp8|"
                     r"ocp_mxfp4|modelopt_nvfp4|kmeans[0-9]+|pot[0-9]+|"
                     r"hqq[0-9]+)(?P<rest>(_[a-z0-9]+)*)")
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
        _parse_method(out, method, scheme)
        if is_block_format(out) and (
                out.method not in (pb.QUANT_METHOD_UNSPECIFIED,
                                   pb.QUANT_METHOD_RTN, pb.QUANT_METHOD_GPTQ)
                or out.gptq.static_groups):
            raise ValueError(f"malformed scheme {scheme!r}: a block format takes "
                             "only gptq, without static_groups")
        return out
    family = _FAMILY.fullmatch(text.lower())
    if family is not None:
        return _parse_family(family, scheme)
    m = _INT.fullmatch(text)
    if m is None:
        if not _BLOCK.fullmatch(text):
            raise ValueError(f"malformed scheme {scheme!r}")
        return pb.Scheme(format=text)  # a block format: the rest is ignored
    out = pb.Scheme(format=f"int{m.group('bits')}", symmetric=True,
                    granularity=pb.GRANULARITY_PER_CHANNEL)
    seen_symmetry = seen_granularity = False
    for part in m.group("rest").split("_")[1:]:
        if part in ("sym", "asym", "full"):
            if seen_symmetry:
                raise ValueError(f"malformed scheme {scheme!r}: symmetry given twice")
            seen_symmetry = True
            out.symmetric = part != "asym"
            if part == "full":
                if not has_field(pb.Scheme, "full_range"):
                    raise ValueError(f"scheme {scheme!r}: this quantd package was "
                                     "built from a proto without Scheme.full_range")
                out.full_range = True
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
                "(expected sym, asym, full, tensor, channel or g<N>)")
    return out


def _parse_family(m: "re.Match", scheme: str) -> "pb.Scheme":
    """A float, codebook or HQQ format with its optional suffixes."""
    out = pb.Scheme(format=m.group("format"))
    seen_granularity = False
    for part in m.group("rest").split("_")[1:]:
        if part == "dq":
            if out.format != "nf4":
                raise ValueError(f"malformed scheme {scheme!r}: only nf4 takes _dq")
            if not has_field(pb.Scheme, "double_quant"):
                raise ValueError(f"scheme {scheme!r}: this quantd package was "
                                 "built from a proto without Scheme.double_quant")
            out.double_quant = True
            continue
        if seen_granularity:
            raise ValueError(f"malformed scheme {scheme!r}: unexpected {part!r}")
        seen_granularity = True
        if part == "tensor":
            out.granularity = pb.GRANULARITY_PER_TENSOR
        elif part == "channel":
            out.granularity = pb.GRANULARITY_PER_CHANNEL
        elif part == "block":
            out.granularity = pb.GRANULARITY_PER_GROUP  # group_size 0: default
        elif re.fullmatch(r"g[0-9]+", part) and int(part[1:]) >= 1:
            out.granularity = pb.GRANULARITY_PER_GROUP
            out.group_size = int(part[1:])
        else:
            raise ValueError(
                f"malformed scheme {scheme!r}: unexpected {part!r} (expected "
                "tensor, channel, block, g<N> or, for nf4, dq)")
    return out


def is_block_format(scheme: "pb.Scheme") -> bool:
    """Whether the scheme names a ggml block format (neither an integer
    format nor one of the float, codebook and HQQ families)."""
    return (_INT.fullmatch(scheme.format) is None
            and not is_family_format(scheme))


def is_family_format(scheme: "pb.Scheme") -> bool:
    """Whether the scheme names a float, codebook or HQQ format."""
    return _FAMILY.fullmatch(scheme.format.lower()) is not None


def scheme_name(scheme: "pb.Scheme") -> str:
    """The canonical text of a Scheme: "int4_asym_g128", "int8_sym_channel",
    or the format name of a block format ("Q4_K")."""
    if is_block_format(scheme):
        return scheme.format + _method_suffix(scheme)
    if is_family_format(scheme):
        return _family_name(scheme)
    symmetry = "_sym" if scheme.symmetric else "_asym"
    if scheme.symmetric and getattr(scheme, "full_range", False):
        symmetry = "_full"
    g = scheme.granularity
    if g == pb.GRANULARITY_PER_TENSOR:
        granularity = "_tensor"
    elif g == pb.GRANULARITY_PER_GROUP:
        granularity = f"_g{scheme.group_size}"
    else:
        granularity = "_channel"
    return scheme.format + symmetry + granularity + _method_suffix(scheme)


def _family_name(scheme: "pb.Scheme") -> str:
    """"fp8_e4m3_channel", "nf4_g64_dq", "ocp_mxfp4": the format, then the
    granularity when one is given, then "_dq"."""
    name = scheme.format.lower()
    g = scheme.granularity
    if g == pb.GRANULARITY_PER_TENSOR:
        name += "_tensor"
    elif g == pb.GRANULARITY_PER_CHANNEL:
        name += "_channel"
    elif g == pb.GRANULARITY_PER_GROUP:
        name += f"_g{scheme.group_size}" if scheme.group_size else "_block"
    if getattr(scheme, "double_quant", False):
        name += "_dq"
    return name


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
