// Fuzz target over the request decoding and assembly path: bytes become
// QuantizeRequest messages, which a StreamAssembler validates; every
// complete tensor is quantized as a worker would. Any crash, sanitizer
// report or a status code outside the contract is a bug.
//
// Input format (so the fuzzer reaches deep states quickly): the first byte
// picks a decoder.
//   even: a sequence of [u16 little-endian length][serialized
//         QuantizeRequest] frames, parsed with protobuf (the wire path);
//   odd:  a sequence of one-byte opcodes with small operands that build
//         requests directly (start, header, chunk, end, empty); unless bit
//         1 of the first byte is set, a valid JobStart comes first. Formats
//         include ggml block formats; headers may carry importance weights
//         (one per column, or any count, NaN/Inf/negative included).
//         Calibration sets too (header of any kind/dtype/feature count,
//         chunks of whole rows or not, NaN/Inf values, end), and headers
//         that name a set; sets are folded and tensors that use them are
//         measured against them, as workers would.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iterator>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <atomic>
#include <string>

#include <map>
#include <memory>

#include "absl/status/status.h"
#include "google/protobuf/stubs/logging.h"
#include "server/assembler.h"
#include "server/calibration_set.h"
#include "server/memory_budget.h"
#include "server/quantize_job.h"

namespace {

using quantd::v1::QuantizeRequest;

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() {
    const uint16_t lo = U8();
    return static_cast<uint16_t>(lo | (U8() << 8));
  }
  std::string Bytes(size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

void CheckCode(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnimplemented:  // importance path not implemented
      return;
    default:
      std::fprintf(stderr, "status outside the contract: %s\n",
                   status.ToString().c_str());
      std::abort();
  }
}

// Builds a request from opcodes; false at the end of input.
bool NextOpcodeRequest(Reader& in, QuantizeRequest& req, uint64_t& offset) {
  if (in.empty()) return false;
  req.Clear();
  static const char* const kFormats[] = {"int2", "int3", "int4", "int8",
                                         "int9", "",     "q4_0", "Q8_0",
                                         "IQ4_NL", "q5_1", "Q4_0_g8"};
  constexpr size_t kNumFormats = std::size(kFormats);
  switch (in.U8() % 8) {
    case 0: {
      auto* scheme = req.mutable_start()->mutable_scheme();
      scheme->set_format(kFormats[in.U8() % kNumFormats]);
      scheme->set_symmetric(in.U8() & 1);
      scheme->set_granularity(static_cast<quantd::v1::Granularity>(in.U8() % 5));
      scheme->set_group_size(in.U8() % 40);
      req.mutable_start()->mutable_options()->set_output(
          static_cast<quantd::v1::OutputKind>(in.U8() % 5));
      break;
    }
    case 1: {
      auto* h = req.mutable_header();
      h->set_name(std::string(1, static_cast<char>('a' + in.U8() % 4)));
      h->set_dtype(static_cast<quantd::v1::DType>(in.U8() % 5));
      const int dims = in.U8() % 4;
      for (int i = 0; i < dims; ++i) {
        const uint8_t d = in.U8();
        h->add_shape(d == 255 ? (uint64_t{1} << 62) : d % 48);
      }
      if (in.U8() & 1) {
        auto* s = h->mutable_scheme();
        s->set_format(kFormats[in.U8() % kNumFormats]);
        s->set_granularity(static_cast<quantd::v1::Granularity>(in.U8() % 4));
        s->set_group_size(in.U8() % 40);
      }
      // Importance weights: none, one per column, or any count; a byte per
      // weight, 255 = NaN, 254 = Inf, small negatives included.
      const uint8_t mode = in.U8();
      if (mode % 4 == 1 || mode % 4 == 2) {
        const uint64_t count = mode % 4 == 1 && h->shape_size() > 0
                                   ? std::min<uint64_t>(h->shape(h->shape_size() - 1), 64)
                                   : mode >> 2;
        for (uint64_t i = 0; i < count; ++i) {
          const uint8_t b = in.U8();
          h->add_importance(b == 255   ? std::nanf("")
                            : b == 254 ? HUGE_VALF
                                       : static_cast<float>(b - 4) / 16.0f);
        }
      }
      if (in.U8() % 3 == 0) {
        h->set_calibration(std::string(1, static_cast<char>('x' + in.U8() % 3)));
        if (in.U8() & 1) {
          h->mutable_activation_range()->set_method(
              static_cast<quantd::v1::RangeMethod>(in.U8() % 6));
          h->mutable_activation_range()->set_asymmetric(in.U8() & 1);
          h->mutable_activation_range()->set_percentile(in.U8() % 4 == 0 ? 0 : in.U8());
        }
      }
      offset = 0;
      break;
    }
    case 5: {
      auto* h = req.mutable_calibration_header();
      h->set_name(std::string(1, static_cast<char>('x' + in.U8() % 3)));
      h->set_kind(static_cast<quantd::v1::CalibrationKind>(in.U8() % 5));
      h->set_dtype(static_cast<quantd::v1::DType>(in.U8() % 5));
      const uint8_t f = in.U8();
      h->set_features(f == 255 ? (uint64_t{1} << 40) : f % 24);
      h->set_tokens(in.U8() % 4);
      h->set_channel_histograms(in.U8() & 1);
      offset = 0;
      break;
    }
    case 6: {
      // Calibration bytes: a byte per value picks special values so that
      // whole rows of finite data and NaN/Inf both come up.
      auto* c = req.mutable_calibration_chunk();
      const uint8_t skew = in.U8();
      c->set_offset(skew < 240 ? offset : offset + skew - 245);
      const uint8_t count = in.U8();
      const uint8_t width = static_cast<uint8_t>(1u << (in.U8() % 4));  // 1..8
      std::string data;
      for (int i = 0; i < count; ++i) {
        const uint8_t b = in.U8();
        float v = b == 255 ? std::nanf("") : b == 254 ? HUGE_VALF
                                                      : static_cast<float>(b) / 8.0f - 12.0f;
        if (width == 8) {
          const double d = v;
          data.append(reinterpret_cast<const char*>(&d), 8);
        } else {
          data.append(reinterpret_cast<const char*>(&v), width == 4 ? 4 : width);
        }
      }
      c->set_data(data);
      offset += c->data().size();
      if (in.U8() & 1) c->set_crc32c(in.U16());
      break;
    }
    case 7:
      req.mutable_calibration_end();
      if (in.U8() & 1) req.mutable_calibration_end()->set_crc32c(in.U16());
      break;
    case 2: {
      auto* c = req.mutable_chunk();
      const uint8_t skew = in.U8();
      c->set_offset(skew < 240 ? offset : offset + skew - 245);
      c->set_data(in.Bytes(in.U8()));
      offset += c->data().size();
      if (in.U8() & 1) c->set_crc32c(in.U16());
      break;
    }
    case 3:
      req.mutable_end();
      if (in.U8() & 1) req.mutable_end()->set_crc32c(in.U16());
      break;
    default:
      break;  // a request with no kind set
  }
  return true;
}

bool NextFramedRequest(Reader& in, QuantizeRequest& req) {
  if (in.empty()) return false;
  const std::string frame = in.Bytes(in.U16());
  req.Clear();
  if (!req.ParseFromString(frame)) req.Clear();  // what gRPC would refuse
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // Invalid UTF-8 in string fields is refused by the parser (as gRPC would
  // refuse the message); its log line per input is noise here.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  const bool framed = (in.U8() & 1) == 0;
  quantd::AssemblerLimits limits;
  limits.max_tensor_bytes = 1 << 16;
  limits.max_chunk_bytes = 1 << 12;
  quantd::StreamAssembler assembler(limits);
  std::atomic<bool> cancelled{false};
  // Calibration sets as the service runs them, on this thread.
  quantd::MemoryBudget budget(int64_t{1} << 40);
  std::map<std::string, std::shared_ptr<quantd::CalibrationSet>> sets;
  std::shared_ptr<quantd::CalibrationSet> open_set;
  QuantizeRequest req;
  uint64_t offset = 0;
  if (!framed && (data[0] & 2) == 0) {
    // Most opcode inputs open with a valid JobStart, so mutations explore
    // the tensor states rather than the first-message check.
    req.mutable_start()->mutable_scheme()->set_format("int4");
    CheckCode(assembler.Consume(req).status());
  }
  while (framed ? NextFramedRequest(in, req) : NextOpcodeRequest(in, req, offset)) {
    absl::StatusOr<quantd::StreamAssembler::Event> ev = assembler.Consume(req);
    CheckCode(ev.status());
    if (!ev.ok()) return 0;  // the stream ends at its first error
    using Event = quantd::StreamAssembler::Event;
    if (ev->kind == Event::kCalibrationHeader) {
      absl::StatusOr<quantd::MemoryBudget::Reservation> r =
          budget.Reserve(ev->working_set_bytes, ev->name);
      if (!r.ok()) return 0;  // RESOURCE_EXHAUSTED ends the stream
      open_set = std::make_shared<quantd::CalibrationSet>(ev->calibration,
                                                          *std::move(r));
      sets[ev->name] = open_set;
    } else if (ev->kind == Event::kCalibrationChunk) {
      const absl::Status s = open_set->AddRows(ev->data);
      CheckCode(s);
      if (!s.ok()) return 0;
    } else if (ev->kind == Event::kCalibrationEnd) {
      const absl::Status s = open_set->Complete(std::move(ev->payload));
      CheckCode(s);
      if (!s.ok()) return 0;
      open_set.reset();
    } else if (ev->kind == Event::kTensor) {
      if (!ev->tensor->calibration_name.empty()) {
        ev->tensor->calibration = sets.at(ev->tensor->calibration_name);
      }
      absl::StatusOr<quantd::TensorOutput> out =
          quantd::RunQuantizeJob(*ev->tensor, cancelled);
      CheckCode(out.status());
    }
  }
  CheckCode(assembler.Finish());
  return 0;
}
