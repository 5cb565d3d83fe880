"""Textual schemes to wire Schemes and back, as the server's ParseScheme reads
them."""
import pytest

from quantd import parse_scheme, scheme_name
from quantd.v1 import quantizer_pb2 as pb


@pytest.mark.parametrize("text, fmt, symmetric, granularity, group_size, name", [
    ("int8", "int8", True, pb.GRANULARITY_PER_CHANNEL, 0, "int8_sym_channel"),
    ("int4_asym_g128", "int4", False, pb.GRANULARITY_PER_GROUP, 128, "int4_asym_g128"),
    ("int3_tensor", "int3", True, pb.GRANULARITY_PER_TENSOR, 0, "int3_sym_tensor"),
    ("int2_g16_asym", "int2", False, pb.GRANULARITY_PER_GROUP, 16, "int2_asym_g16"),
    ("int5_sym_channel", "int5", True, pb.GRANULARITY_PER_CHANNEL, 0, "int5_sym_channel"),
])
def test_int_schemes(text, fmt, symmetric, granularity, group_size, name):
    s = parse_scheme(text)
    assert (s.format, s.symmetric, s.granularity, s.group_size) == (
        fmt, symmetric, granularity, group_size)
    assert scheme_name(s) == name
    assert parse_scheme(name) == s


@pytest.mark.parametrize("text", ["Q4_K", "q8_0", "IQ4_NL", "MXFP4"])
def test_other_names_are_formats_for_the_server(text):
    s = parse_scheme(text)
    assert s.format == text
    assert scheme_name(s) == text


@pytest.mark.parametrize("text, words", [
    ("int4_sym_asym", "symmetry given twice"),
    ("int4_g0", "unexpected 'g0'"),
    ("int4_tensor_g8", "unexpected 'g8'"),
    ("int4_bogus", "unexpected 'bogus'"),
    ("", "malformed"),
    ("int4 g8", "malformed"),
])
def test_malformed(text, words):
    with pytest.raises(ValueError) as e:
        parse_scheme(text)
    assert words in str(e.value)


def test_wire_scheme_passes_through_and_other_types_are_refused():
    s = pb.Scheme(format="int6", granularity=pb.GRANULARITY_PER_TENSOR)
    assert parse_scheme(s) is s
    with pytest.raises(TypeError):
        parse_scheme(8)


@pytest.mark.parametrize("text, fmt, granularity, group_size, name", [
    ("fp8_e4m3", "fp8_e4m3", pb.GRANULARITY_UNSPECIFIED, 0, "fp8_e4m3"),
    ("fp8_e4m3_channel", "fp8_e4m3", pb.GRANULARITY_PER_CHANNEL, 0, "fp8_e4m3_channel"),
    ("FP8_E5M2_g128", "fp8_e5m2", pb.GRANULARITY_PER_GROUP, 128, "fp8_e5m2_g128"),
    ("fp8_e4m3_block", "fp8_e4m3", pb.GRANULARITY_PER_GROUP, 0, "fp8_e4m3_block"),
    ("fp4_e2m1_tensor", "fp4_e2m1", pb.GRANULARITY_PER_TENSOR, 0, "fp4_e2m1_tensor"),
    ("ocp_mxfp4", "ocp_mxfp4", pb.GRANULARITY_UNSPECIFIED, 0, "ocp_mxfp4"),
    ("modelopt_nvfp4", "modelopt_nvfp4", pb.GRANULARITY_UNSPECIFIED, 0, "modelopt_nvfp4"),
    ("kmeans4_g128", "kmeans4", pb.GRANULARITY_PER_GROUP, 128, "kmeans4_g128"),
    ("pot3_channel", "pot3", pb.GRANULARITY_PER_CHANNEL, 0, "pot3_channel"),
    ("hqq4_g64", "hqq4", pb.GRANULARITY_PER_GROUP, 64, "hqq4_g64"),
])
def test_family_schemes(text, fmt, granularity, group_size, name):
    s = parse_scheme(text)
    assert (s.format, s.granularity, s.group_size) == (fmt, granularity, group_size)
    assert scheme_name(s) == name
    assert parse_scheme(name) == s


def test_nf4_double_quant_and_full_range():
    s = parse_scheme("nf4_g64_dq")
    assert (s.format, s.group_size, s.double_quant) == ("nf4", 64, True)
    assert scheme_name(s) == "nf4_g64_dq"
    s = parse_scheme("int4_full_g128")
    assert (s.format, s.symmetric, s.full_range, s.group_size) == ("int4", True, True, 128)
    assert scheme_name(s) == "int4_full_g128"
    assert scheme_name(parse_scheme("int8_full")) == "int8_full_channel"
    assert not parse_scheme("int4_sym_g128").full_range


@pytest.mark.parametrize("text, words", [
    ("int4_full_asym", "symmetry given twice"),
    ("fp8_e4m3_dq", "only nf4 takes _dq"),
    ("fp8_e4m3_channel_g32", "unexpected 'g32'"),
    ("hqq4_bogus", "unexpected 'bogus'"),
])
def test_family_malformed(text, words):
    with pytest.raises(ValueError) as e:
        parse_scheme(text)
    assert words in str(e.value)
