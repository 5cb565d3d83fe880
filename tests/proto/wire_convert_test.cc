#include "proto/wire_convert.h"

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "kernels/parts.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

// Every row of the part table has the ShardChunk.Part value of its name,
// and every value of the proto's enum but UNSPECIFIED has a row: a part
// added on one side only fails here.
TEST(WireConvertTest, PartTableAndProtoEnumAgree) {
  const struct {
    Part part;
    v1::ShardChunk::Part wire;
  } want[] = {
      {Part::kCodes, v1::ShardChunk::PART_CODES},
      {Part::kScales, v1::ShardChunk::PART_SCALES},
      {Part::kZeroPoints, v1::ShardChunk::PART_ZERO_POINTS},
      {Part::kBlockScales, v1::ShardChunk::PART_BLOCK_SCALES},
      {Part::kSecondScales, v1::ShardChunk::PART_SECOND_SCALES},
      {Part::kCodebooks, v1::ShardChunk::PART_CODEBOOKS},
      {Part::kZeroPointsF32, v1::ShardChunk::PART_ZERO_POINTS_F32},
      {Part::kGroupIndex, v1::ShardChunk::PART_GROUP_INDEX},
      {Part::kFakeQuant, v1::ShardChunk::PART_FAKE_QUANT},
      {Part::kChannelScales, v1::ShardChunk::PART_CHANNEL_SCALES},
  };
  ASSERT_EQ(std::size(want), kNumParts);
  for (const auto& w : want) {
    SCOPED_TRACE(SpecOf(w.part).name);
    EXPECT_EQ(PartToProto(w.part), w.wire);
    EXPECT_EQ(SpecOf(w.part).wire, static_cast<int>(w.wire));
    ASSERT_NE(PartFromProto(w.wire), nullptr);
    EXPECT_EQ(PartFromProto(w.wire)->part, w.part);
  }
  const google::protobuf::EnumDescriptor* e =
      v1::ShardChunk::Part_descriptor();
  std::set<int> values;
  for (int i = 0; i < e->value_count(); ++i) {
    const int v = e->value(i)->number();
    if (v == v1::ShardChunk::PART_UNSPECIFIED) continue;
    values.insert(v);
    EXPECT_NE(PartFromProto(v), nullptr) << e->value(i)->name();
  }
  EXPECT_EQ(values.size(), kNumParts);
  EXPECT_EQ(PartFromProto(v1::ShardChunk::PART_UNSPECIFIED), nullptr);
  EXPECT_EQ(PartFromProto(e->value_count() + 100), nullptr);
}

TEST(WireConvertTest, OutputKind) {
  EXPECT_EQ(*OutputKindFromProto(v1::OUTPUT_KIND_UNSPECIFIED),
            OutputKind::kPacked);
  EXPECT_EQ(*OutputKindFromProto(v1::OUTPUT_KIND_PACKED), OutputKind::kPacked);
  EXPECT_EQ(*OutputKindFromProto(v1::OUTPUT_KIND_FAKE_QUANT),
            OutputKind::kFakeQuant);
  EXPECT_EQ(*OutputKindFromProto(v1::OUTPUT_KIND_BOTH), OutputKind::kBoth);
  EXPECT_EQ(OutputKindFromProto(99).status().code(),
            absl::StatusCode::kInvalidArgument);
}

const char* const kSchemes[] = {
    "int8",           "int4_asym_g128", "int3_sym_tensor",
    "int2_asym_g1",   "int4_full_g128", "int4_asym_g128+gptq",
    "int4_g128+gptq(act_order,static_groups,damp=0.05,block=64)",
    "int3_g128+awq(grid=10,noclip)",    "int8+smoothquant(alpha=0.5)",
    "fp8_e4m3",       "fp8_e5m2_g64",   "fp4_e2m1",
    "nf4_dq_g128",    "ocp_mxfp8",      "modelopt_nvfp4",
    "kmeans4_g64",    "pot3",           "hqq4",
    "Q4_0",           "Q4_K",           "IQ4_NL",
    "MXFP4",          "Q8_0",           "q4_k+gptq(act_order,damp=0.05)",
};

// Scheme -> proto -> Scheme gives the same scheme for every family.
TEST(WireConvertTest, SchemeRoundTrip) {
  for (const char* text : kSchemes) {
    SCOPED_TRACE(text);
    const Scheme scheme = *ParseScheme(text);
    v1::Scheme proto;
    SchemeToProto(scheme, &proto);
    absl::StatusOr<Scheme> back = SchemeFromProto(proto);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(SchemeToString(*back), SchemeToString(scheme));
    EXPECT_TRUE(*back == scheme);
  }
}

// Scheme.text is read with ParseScheme and checked like the fields: the
// same scheme as the fields give, for every family; a layout names its
// scheme in canonical text.
TEST(WireConvertTest, SchemeTextGivesTheSameSchemeAsTheFields) {
  for (const char* text : kSchemes) {
    SCOPED_TRACE(text);
    v1::Scheme proto;
    proto.set_text(text);
    absl::StatusOr<Scheme> from_text = SchemeFromProto(proto);
    ASSERT_TRUE(from_text.ok()) << from_text.status();
    EXPECT_TRUE(*from_text == *ParseScheme(text));
    v1::Layout layout;
    LayoutToProto(*MakeLayout(*from_text, {8, 256}), &layout);
    EXPECT_EQ(layout.scheme_text(), SchemeToString(*from_text));
    EXPECT_TRUE(layout.scheme().text().empty());
    // The canonical text is a fixed point.
    proto.set_text(layout.scheme_text());
    EXPECT_TRUE(*SchemeFromProto(proto) == *from_text);
  }
}

TEST(WireConvertTest, SchemeTextRefusals) {
  v1::Scheme bad;
  bad.set_text("int4_g0");
  absl::Status status = SchemeFromProto(bad).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "scheme.text")) << status;
  // Text and fields together: which one was meant is not ours to guess.
  v1::Scheme both;
  both.set_text("int8");
  both.set_group_size(128);
  status = SchemeFromProto(both).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "group_size")) << status;
  // A text ParseScheme reads but the field checks refuse is refused too:
  // a ggml block format takes no AWQ.
  v1::Scheme method;
  method.set_text("Q4_K+awq");
  EXPECT_EQ(SchemeFromProto(method).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WireConvertTest, SchemeFromProtoRefusesBadMethodParameters) {
  v1::Scheme p;
  SchemeToProto(*ParseScheme("int4_g128+gptq"), &p);
  p.mutable_gptq()->set_damp_percent(-1);
  EXPECT_EQ(SchemeFromProto(p).status().code(),
            absl::StatusCode::kInvalidArgument);
  SchemeToProto(*ParseScheme("int8+smoothquant"), &p);
  p.mutable_smoothquant()->set_alpha(1.5);
  EXPECT_EQ(SchemeFromProto(p).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::Scheme unknown;
  SchemeToProto(*ParseScheme("int8"), &unknown);
  unknown.set_method(static_cast<v1::QuantMethod>(77));
  EXPECT_EQ(SchemeFromProto(unknown).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Layout -> proto -> Layout for every family; a received layout whose
// fields do not follow from its scheme and shape is refused, naming the
// field.
TEST(WireConvertTest, LayoutRoundTripAndTamperedFieldsRefused) {
  for (const char* text : kSchemes) {
    SCOPED_TRACE(text);
    const Layout layout = *MakeLayout(*ParseScheme(text), {4, 256});
    v1::Layout proto;
    LayoutToProto(layout, &proto);
    absl::StatusOr<Layout> back = LayoutFromProto(proto);
    ASSERT_TRUE(back.ok()) << back.status();
    for (const PartSpec& spec : PartTable()) {
      EXPECT_EQ(PartBytes(spec, *back, OutputKind::kBoth),
                PartBytes(spec, layout, OutputKind::kBoth))
          << spec.name;
    }
    EXPECT_EQ(back->shape, layout.shape);
    EXPECT_EQ(back->kind, layout.kind);
    EXPECT_TRUE(back->scheme == layout.scheme);

    v1::Layout tampered = proto;
    tampered.set_packed_bytes(proto.packed_bytes() + 1);
    absl::Status s = LayoutFromProto(tampered).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("packed_bytes"), std::string::npos) << s;
    tampered = proto;
    tampered.set_num_scales(proto.num_scales() + 3);
    EXPECT_EQ(LayoutFromProto(tampered).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  v1::Layout no_shape;
  SchemeToProto(*ParseScheme("int8"), no_shape.mutable_scheme());
  EXPECT_FALSE(LayoutFromProto(no_shape).ok());
}

// A layout planned for one scheme and the proto of another: refused,
// naming a field; the per-tensor values may differ.
TEST(WireConvertTest, CheckLayoutProtoComparesAllButPerTensorValues) {
  const Layout planned = *MakeLayout(*ParseScheme("int4_asym_g128"), {4, 256});
  v1::Layout same;
  LayoutToProto(planned, &same);
  same.set_tensor_scale(2.0f);
  same.set_scale_offset(-1.0f);
  EXPECT_TRUE(CheckLayoutProto(planned, same).ok());
  v1::Layout other;
  LayoutToProto(*MakeLayout(*ParseScheme("int4_asym_g64"), {4, 256}), &other);
  const absl::Status s = CheckLayoutProto(planned, other);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("group_size"), std::string::npos) << s;
}

TEST(WireConvertTest, DTypes) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    EXPECT_EQ(*DTypeFromProto(DTypeToProto(d)), d);
  }
  EXPECT_EQ(DTypeFromProto(v1::DTYPE_UNSPECIFIED).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DTypeFromProto(1234).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WireConvertTest, RangeOptions) {
  v1::ActivationRangeOptions p;
  absl::StatusOr<RangeOptions> r = RangeOptionsFromProto(p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->method, RangeMethod::kMinMax);
  p.set_method(v1::RANGE_METHOD_PERCENTILE);
  r = RangeOptionsFromProto(p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->percentile, 99.99);
  p.set_percentile(40);
  EXPECT_EQ(RangeOptionsFromProto(p).status().code(),
            absl::StatusCode::kInvalidArgument);
  p.set_percentile(99.9);
  r = RangeOptionsFromProto(p);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->percentile, 99.9);
  EXPECT_EQ(RangeMethodToProto(r->method), v1::RANGE_METHOD_PERCENTILE);
  v1::ActivationRangeOptions minmax;
  minmax.set_percentile(99.9);  // a percentile with min-max
  EXPECT_EQ(RangeOptionsFromProto(minmax).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The format list names every format of every table once.
TEST(WireConvertTest, FormatTablesNameEachFormatOnce) {
  v1::ServerInfo info;
  FormatTablesToProto(&info);
  std::set<std::string> names;
  for (const v1::FormatInfo& f : info.formats()) {
    EXPECT_TRUE(names.insert(f.name()).second) << f.name();
    EXPECT_TRUE(f.bits() > 0 || f.bits_per_weight() > 0) << f.name();
  }
  for (const char* name : {"Q4_0", "Q8_0", "Q4_K", "IQ4_NL", "MXFP4", "hqq4",
                           "kmeans4", "pot2"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
}

}  // namespace
}  // namespace quantd
