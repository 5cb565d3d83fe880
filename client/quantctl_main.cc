// quantctl: the command-line client of quantd.
//
//   quantctl quantize MODEL --scheme int4_asym_g128 --out OUT.safetensors
//       --server host:port[,host:port...] [--streams N]
//       [--override 'REGEX=SCHEME']... [--fake-quant] [--report OUT.json]
//       [--quantize-1d] [--max-attempts N] [--no-resume]
//       [--target-bpw B | --target-bytes N] [--candidates S,S,...]
//       [--progress auto|bar|lines|none] [--quiet]
//   quantctl info --server host:port [--json]
//   quantctl bench --server host:port [--concurrency N] [--duration 30s] ...
//
// Flags are parsed by hand (not absl::flags) because --override repeats and
// its regexes may contain commas. Exit status: 0 success, 1 failure (any
// tensor failed, or the run could not start), 2 usage error.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/json.h"
#include "client/load_generator.h"
#include "client/quantd_client.h"
#include "client/quantize_gguf.h"
#include "client/quantize_model.h"
#include "kernels/version.h"

namespace quantd {
namespace {

constexpr char kUsage[] = R"(quantctl: quantize models with quantd servers.

usage:
  quantctl quantize MODEL --scheme SCHEME --out OUT.safetensors
                    --server HOST:PORT[,HOST:PORT...] [options]
  quantctl quantize IN.gguf --type PRESET --out OUT.gguf --server HOST:PORT
                    [--pure] [--imatrix FILE] [--dry-run] ... (llama.cpp
                    presets; see client/README.md)
  quantctl info --server HOST:PORT [--json]
  quantctl bench --server HOST:PORT [--concurrency N] [--duration 30s]
                 [--shape 1024x1024] [--dtype f32|f16|bf16] [--scheme S]
                 [--bad-fraction F] [--report OUT.json]
  quantctl --version | --help

MODEL is a .safetensors file, a model.safetensors.index.json (sharded), or a
directory holding either.

quantize options:
  --scheme TEXT        default scheme, e.g. int8, int4_asym_g128, int3_tensor
                       (default: int8)
  --out PATH           output safetensors file (required)
  --server LIST        comma-separated quantd addresses (required), or one
                       gRPC target naming replicas, balanced round-robin:
                       dns:///HOST:PORT (every address HOST resolves to,
                       e.g. a headless Service) or ipv4:A:PORT,B:PORT
  --streams N          parallel streams per server (default: 2)
  --override R=S       scheme S (or "skip") for tensors whose name matches
                       regex R (searched; ECMAScript); repeatable, first
                       match wins
  --fake-quant         write dequantized F32 tensors under their own names
  --quantize-1d        also quantize 1-D float tensors (norms, biases)
  --report PATH        JSON report (default: OUT.report.json)
  --max-attempts N     sends of one tensor before it fails (default: 3);
                       transient errors are retried with jittered backoff
                       and moved to another server when one is down
  --no-resume          start over even if OUT.partial and its manifest from
                       an interrupted run of the same command exist (by
                       default their finished tensors are kept, checked by
                       CRC-32C, and only the rest is sent)
  --progress MODE      auto, bar, lines or none (default: auto)
  --quiet              no progress and no per-tensor table
  --target-bpw B       mixed precision: quantize each tensor with every
                       candidate first, then give each the candidate that
                       meets B bits per weight over the quantized tensors
                       (scales and zero points included) with the least
                       total squared error; --override tensors stay fixed
  --target-bytes N     mixed precision to a size instead: N bytes for all
                       output tensors (quantized ones packed, plus copies)
  --candidates LIST    comma-separated candidate schemes for --target-*
                       (default: int2_asym_g64,int3_asym_g128,int3_asym_g64,
                       int4_asym_g128,int4_asym_g64,int5_asym_g128,
                       int6_asym_g128,int8); ggml types such as Q4_K too;
                       those that do not fit a tensor's shape are skipped
  --mixed-error E      what --target-* minimises: weight, output (each
                       layer's output error on its calibration set) or auto
                       (output when every chosen tensor has a set; default)
  --calibration PATH   safetensors file of layer inputs X ([tokens,
                       features], F32/F16/BF16), one calibration set per
                       tensor, named after it; repeatable. Weight M.weight
                       uses set M unless --calibrate says otherwise; such
                       tensors get output error, activation range and can
                       use +gptq, +awq, +smoothquant schemes
  --calibrate R=SET    weights matching regex R use calibration set SET
                       ("none": no set); repeatable, first match wins
  --holdout-rows N     rows per set held back for the W8A8 integer-only
                       check of int8 tensors (default: 0, at most 4096)
  --activation-range T static activation range: minmax (default),
                       percentile[:P], mse or kl, then ,asym ,per_channel

bench options (a load generator: streams busy for a duration with random
tensors, throughput and per-tensor latency p50/p90/p99; exit 1 if a good
tensor failed or a bad request got an unexpected status):
  --concurrency N      parallel streams (default: 4)
  --duration D         how long, e.g. 30s, 5m (default: 10s)
  --shape AxB          tensor shape (default: 1024x1024)
  --dtype T            f32, f16 or bf16 (default: f32)
  --scheme TEXT        (default: int8)
  --tensors-per-stream N  good tensors per stream before a new one (default: 16)
  --bad-fraction F     share of streams that carry one bad request instead
                       (NaN, unknown scheme, bad group size, deadline
                       mid-upload) (default: 0)
  --seed N             random seed (default: 1)
  --report PATH        also write the results as JSON

security options (quantize, info and bench):
  --tls-ca PATH        PEM CA of the servers' certificates: use TLS
  --tls-cert PATH      PEM client certificate, with --tls-key (mutual TLS)
  --tls-key PATH       PEM key of --tls-cert
  --token-file PATH    file whose first line is the bearer token for servers
                       run with --auth_token_file (or set QUANTD_TOKEN)

Exit status: 0 success, 1 a tensor failed or the run could not start,
2 usage error.
)";

int Usage(absl::string_view error) {
  std::fprintf(stderr, "quantctl: %.*s\n\n%s", static_cast<int>(error.size()),
               error.data(), kUsage);
  return 2;
}

// Command-line words after the subcommand, split into flags and positionals.
struct Args {
  std::vector<std::pair<std::string, std::string>> flags;  // in order
  std::vector<std::string> positional;
};

// Flags that take no value.
bool IsSwitch(absl::string_view name) {
  return name == "fake-quant" || name == "no-resume" || name == "quiet" ||
         name == "json" || name == "quantize-1d" || name == "help" ||
         name == "pure" || name == "leave-output-tensor" ||
         name == "dry-run";
}

std::optional<Args> ParseArgs(int argc, char** argv, int first,
                              std::string& error) {
  Args args;
  for (int i = first; i < argc; ++i) {
    absl::string_view word = argv[i];
    if (word == "--") {
      for (++i; i < argc; ++i) args.positional.emplace_back(argv[i]);
      break;
    }
    if (!absl::StartsWith(word, "--")) {
      args.positional.emplace_back(word);
      continue;
    }
    word.remove_prefix(2);
    std::string name, value;
    if (size_t eq = word.find('='); eq != absl::string_view::npos) {
      name = std::string(word.substr(0, eq));
      value = std::string(word.substr(eq + 1));
    } else {
      name = std::string(word);
      // Accept --flag_name as --flag-name.
      if (!IsSwitch(name) &&
          !IsSwitch(absl::StrReplaceAll(name, {{"_", "-"}}))) {
        if (i + 1 >= argc) {
          error = absl::StrCat("--", name, " needs a value");
          return std::nullopt;
        }
        value = argv[++i];
      }
    }
    name = absl::StrReplaceAll(name, {{"_", "-"}});
    args.flags.emplace_back(name, value);
  }
  return args;
}

// TLS files and bearer token, shared by every command.
struct Security {
  std::string ca_file, cert_file, key_file, token;
};

// Consumes the security flags; false if `name` is not one of them. Sets
// `error` when a value is bad.
bool ParseSecurityFlag(const std::string& name, const std::string& value,
                       Security& security, std::string& error) {
  if (name == "tls-ca") {
    security.ca_file = value;
  } else if (name == "tls-cert") {
    security.cert_file = value;
  } else if (name == "tls-key") {
    security.key_file = value;
  } else if (name == "token-file") {
    std::ifstream f(value);
    std::string line;
    if (!f.good() || !std::getline(f, line) ||
        absl::StripAsciiWhitespace(line).empty()) {
      error = absl::StrCat("--token-file ", value,
                           " cannot be read or has no token on its first line");
    }
    security.token = std::string(absl::StripAsciiWhitespace(line));
  } else {
    return false;
  }
  return true;
}

// The token from QUANTD_TOKEN when no --token-file was given.
void TokenFromEnvironment(Security& security) {
  if (security.token.empty()) {
    if (const char* env = std::getenv("QUANTD_TOKEN"); env != nullptr) {
      security.token = std::string(absl::StripAsciiWhitespace(env));
    }
  }
}

int Info(const Args& args) {
  std::string server;
  bool json = false;
  Security security;
  std::string error;
  for (const auto& [name, value] : args.flags) {
    if (ParseSecurityFlag(name, value, security, error)) {
      if (!error.empty()) return Usage(error);
    } else if (name == "server") {
      server = value;
    } else if (name == "json") {
      json = true;
    } else {
      return Usage(absl::StrCat("unknown flag --", name, " for info"));
    }
  }
  if (server.empty()) return Usage("info needs --server HOST:PORT");
  if (!args.positional.empty()) return Usage("info takes no arguments");
  TokenFromEnvironment(security);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(security.ca_file, security.cert_file,
                             security.key_file);
  if (!credentials.ok()) return Usage(credentials.status().message());
  QuantdClient client(grpc::CreateChannel(server, *credentials),
                      security.token);
  absl::StatusOr<v1::ServerInfo> info = client.GetServerInfo();
  if (!info.ok()) {
    std::fprintf(stderr, "quantctl: server %s: %s\n", server.c_str(),
                 info.status().ToString().c_str());
    return 1;
  }
  if (json) {
    std::string out;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(*info, &out, options);
    std::cout << out;
    return 0;
  }
  std::cout << "server:      " << server << "\n"
            << "version:     " << info->version() << "\n"
            << "build:       " << info->build() << "\n"
            << "kernel isa:  " << info->kernel_isa() << "\n"
            << "workers:     " << info->workers() << "\n"
            << "limits:      max_tensor_bytes="
            << info->limits().max_tensor_bytes()
            << " max_chunk_bytes=" << info->limits().max_chunk_bytes()
            << " memory_budget_bytes=" << info->limits().memory_budget_bytes()
            << " max_queue_jobs=" << info->limits().max_queue_jobs() << "\n";
  std::vector<std::string> dtypes;
  for (int d : info->dtypes()) {
    dtypes.push_back(v1::DType_Name(static_cast<v1::DType>(d)));
  }
  std::cout << "dtypes:      " << absl::StrJoin(dtypes, " ") << "\n"
            << "formats:\n";
  for (const v1::FormatInfo& f : info->formats()) {
    std::vector<std::string> granularities;
    for (int g : f.granularities()) {
      granularities.push_back(
          v1::Granularity_Name(static_cast<v1::Granularity>(g)));
    }
    std::cout << "  " << f.name() << "  bits=" << f.bits()
              << (f.symmetric() ? " sym" : "")
              << (f.asymmetric() ? " asym" : "") << "  "
              << absl::StrJoin(granularities, ",") << "\n";
  }
  return 0;
}

bool ParseInt(const std::string& name, const std::string& value, int& out,
              std::string& error) {
  if (!absl::SimpleAtoi(value, &out) || out < 1) {
    error = absl::StrCat("--", name, " needs a positive integer, not \"", value,
                         "\"");
    return false;
  }
  return true;
}

// `quantctl quantize IN.gguf ...`: runs and prints; the exit status.
int QuantizeGgufCommand(QuantizeGgufOptions& options, bool quiet) {
  if (options.preset.empty()) return Usage("--type PRESET is required");
  if (!options.dry_run && options.output.empty()) {
    return Usage("quantize needs --out PATH");
  }
  absl::StatusOr<GgufRunSummary> summary = QuantizeGguf(options);
  if (!summary.ok()) {
    std::fprintf(stderr, "quantctl: %s\n", summary.status().ToString().c_str());
    return 1;
  }
  if (!quiet || options.dry_run) {
    std::cout << FormatGgufTable(*summary);
  } else {
    std::cout << FormatTotals(summary->run);
  }
  std::cout.flush();
  if (!summary->run.report.empty()) {
    std::fprintf(stderr, "quantctl: report written to %s\n",
                 summary->run.report.c_str());
  }
  if (summary->num_failed > 0) {
    std::fprintf(stderr,
                 "quantctl: %lld tensor(s) failed; %s was not written; "
                 "%s keeps the finished tensors: run the same command again "
                 "to resume\n",
                 static_cast<long long>(summary->num_failed),
                 options.output.c_str(), summary->run.partial.c_str());
    return 1;
  }
  return 0;
}

int Quantize(const Args& args) {
  QuantizeModelOptions options;
  QuantizeGgufOptions gguf;  // the GGUF flags
  bool is_gguf = !args.positional.empty() &&
                 absl::EndsWith(args.positional.front(), ".gguf");
  bool quiet = false;
  bool candidates_given = false;
  std::string error;
  Security security;
  for (const auto& [name, value] : args.flags) {
    if (ParseSecurityFlag(name, value, security, error)) {
      if (!error.empty()) return Usage(error);
    } else if (name == "scheme") {
      options.scheme = value;
    } else if (name == "out") {
      options.output = value;
    } else if (name == "server") {
      if (absl::StartsWith(value, "dns:") || absl::StartsWith(value, "ipv4:") ||
          absl::StartsWith(value, "ipv6:")) {
        // One balanced target; ipv4:/ipv6: lists keep their commas.
        options.servers.emplace_back(value);
      } else {
        for (absl::string_view s :
             absl::StrSplit(value, ',', absl::SkipEmpty())) {
          options.servers.emplace_back(s);
        }
      }
    } else if (name == "streams") {
      if (!ParseInt(name, value, options.streams_per_server, error)) {
        return Usage(error);
      }
    } else if (name == "max-attempts") {
      if (!ParseInt(name, value, options.max_attempts, error)) {
        return Usage(error);
      }
    } else if (name == "override") {
      options.overrides.push_back(value);
    } else if (name == "target-bpw") {
      if (!absl::SimpleAtod(value, &options.target_bpw) ||
          !(options.target_bpw > 0 && options.target_bpw <= 64)) {
        return Usage(absl::StrCat(
            "--target-bpw needs bits per weight in (0, 64], not \"", value,
            "\""));
      }
    } else if (name == "target-bytes") {
      if (!absl::SimpleAtoi(value, &options.target_bytes) ||
          options.target_bytes == 0) {
        return Usage(absl::StrCat(
            "--target-bytes needs a positive byte count, not \"", value,
            "\""));
      }
    } else if (name == "candidates") {
      options.candidates = value;
      candidates_given = true;
    } else if (name == "mixed-error") {
      options.mixed_error = value;
    } else if (name == "calibration") {
      options.calibration_files.push_back(value);
    } else if (name == "calibrate") {
      options.calibration_rules.push_back(value);
    } else if (name == "holdout-rows") {
      if (!absl::SimpleAtoi(value, &options.holdout_rows) ||
          options.holdout_rows < 0 || options.holdout_rows > 4096) {
        return Usage(absl::StrCat(
            "--holdout-rows needs a count in [0, 4096], not \"", value, "\""));
      }
    } else if (name == "activation-range") {
      options.activation_range = value;
    } else if (name == "fake-quant") {
      options.fake_quant = true;
    } else if (name == "quantize-1d") {
      options.quantize_1d = true;
    } else if (name == "report") {
      options.report = value;
    } else if (name == "quiet") {
      quiet = true;
    } else if (name == "type") {
      gguf.preset = value;
      is_gguf = true;
    } else if (name == "pure") {
      gguf.pure = true;
    } else if (name == "leave-output-tensor") {
      gguf.leave_output_tensor = true;
    } else if (name == "dry-run") {
      gguf.dry_run = true;
    } else if (name == "output-tensor-type") {
      gguf.output_tensor_type = value;
    } else if (name == "token-embedding-type") {
      gguf.token_embedding_type = value;
    } else if (name == "tensor-type") {
      gguf.tensor_types.push_back(value);
    } else if (name == "imatrix") {
      gguf.imatrix = value;
    } else if (name == "no-resume") {
      options.resume = false;
    } else if (name == "progress") {
      if (value == "auto") {
        options.progress = ProgressStyle::kAuto;
      } else if (value == "bar") {
        options.progress = ProgressStyle::kBar;
      } else if (value == "lines") {
        options.progress = ProgressStyle::kLines;
      } else if (value == "none") {
        options.progress = ProgressStyle::kNone;
      } else {
        return Usage(
            absl::StrCat("--progress must be auto, bar, lines or "
                         "none, not \"",
                         value, "\""));
      }
    } else {
      return Usage(absl::StrCat("unknown flag --", name, " for quantize"));
    }
  }
  TokenFromEnvironment(security);
  options.tls_ca_file = security.ca_file;
  options.tls_cert_file = security.cert_file;
  options.tls_key_file = security.key_file;
  options.auth_token = security.token;
  if (args.positional.size() != 1) {
    return Usage("quantize takes exactly one MODEL");
  }
  options.model = args.positional.front();
  if (quiet) options.progress = ProgressStyle::kNone;
  if (is_gguf) {
    static_cast<RunOptions&>(gguf) = options;  // the flags every run has
    gguf.input = options.model;
    return QuantizeGgufCommand(gguf, quiet);
  }
  if (!gguf.preset.empty() || gguf.pure || gguf.leave_output_tensor ||
      gguf.dry_run || !gguf.output_tensor_type.empty() ||
      !gguf.token_embedding_type.empty() || !gguf.tensor_types.empty() ||
      !gguf.imatrix.empty()) {
    return Usage("--type, --pure, --imatrix, --dry-run, --tensor-type ... are "
                 "for GGUF models (IN.gguf)");
  }
  if (options.output.empty()) return Usage("quantize needs --out PATH");
  if (options.servers.empty())
    return Usage("quantize needs --server HOST:PORT");
  if (quiet) options.progress = ProgressStyle::kNone;
  if (options.target_bpw > 0 && options.target_bytes > 0) {
    return Usage("give --target-bpw or --target-bytes, not both");
  }
  if (candidates_given && options.target_bpw == 0 &&
      options.target_bytes == 0) {
    return Usage("--candidates needs --target-bpw or --target-bytes");
  }

  absl::StatusOr<RunSummary> summary = QuantizeModel(options);
  if (!summary.ok()) {
    std::fprintf(stderr, "quantctl: %s\n", summary.status().ToString().c_str());
    return 1;
  }
  if (quiet) {
    std::cout << FormatTotals(*summary);
  } else {
    std::cout << FormatSummaryTable(*summary);
  }
  std::cout.flush();  // the table before any message on stderr
  for (const TensorSummary& t : summary->tensors) {
    if (t.action == TensorAction::kFailed) {
      std::fprintf(stderr, "quantctl: tensor %s failed: %s\n", t.name.c_str(),
                   t.status.ToString().c_str());
    }
  }
  if (!summary->report.empty()) {
    std::fprintf(stderr, "quantctl: report written to %s\n",
                 summary->report.c_str());
  }
  if (summary->num_failed > 0) {
    std::fprintf(stderr,
                 "quantctl: %lld tensor(s) failed; %s was not written; "
                 "%s keeps the finished tensors: run the same command again "
                 "to resume\n",
                 static_cast<long long>(summary->num_failed),
                 options.output.c_str(), summary->partial.c_str());
    return 1;
  }
  return 0;
}

int Bench(const Args& args) {
  LoadOptions options;
  Security security;
  std::string report_path;
  std::string error;
  for (const auto& [name, value] : args.flags) {
    if (ParseSecurityFlag(name, value, security, error)) {
      if (!error.empty()) return Usage(error);
    } else if (name == "server") {
      options.target = value;
    } else if (name == "concurrency") {
      if (!ParseInt(name, value, options.concurrency, error)) {
        return Usage(error);
      }
    } else if (name == "tensors-per-stream") {
      if (!ParseInt(name, value, options.tensors_per_stream, error)) {
        return Usage(error);
      }
    } else if (name == "duration") {
      absl::Duration d;
      double seconds = 0;
      if (absl::ParseDuration(value, &d) && d > absl::ZeroDuration()) {
        options.duration = d;
      } else if (absl::SimpleAtod(value, &seconds) && seconds > 0) {
        options.duration = absl::Seconds(seconds);
      } else {
        return Usage(
            absl::StrCat("--duration needs a duration such as 30s or "
                         "2m, not \"",
                         value, "\""));
      }
    } else if (name == "shape") {
      options.shape.clear();
      for (absl::string_view dim : absl::StrSplit(value, 'x')) {
        int64_t d = 0;
        if (!absl::SimpleAtoi(dim, &d) || d < 1) {
          return Usage(
              absl::StrCat("--shape needs dimensions like 4096x4096, "
                           "not \"",
                           value, "\""));
        }
        options.shape.push_back(d);
      }
    } else if (name == "dtype") {
      absl::StatusOr<DType> dtype = ParseDType(absl::AsciiStrToUpper(value));
      if (!dtype.ok()) return Usage("--dtype must be f32, f16 or bf16");
      options.dtype = *dtype;
    } else if (name == "scheme") {
      options.scheme = value;
    } else if (name == "bad-fraction") {
      if (!absl::SimpleAtod(value, &options.bad_fraction) ||
          !(options.bad_fraction >= 0 && options.bad_fraction <= 1)) {
        return Usage("--bad-fraction needs a number in [0, 1]");
      }
    } else if (name == "seed") {
      if (!absl::SimpleAtoi(value, &options.seed)) {
        return Usage("--seed needs an integer");
      }
    } else if (name == "report") {
      report_path = value;
    } else {
      return Usage(absl::StrCat("unknown flag --", name, " for bench"));
    }
  }
  if (options.target.empty()) return Usage("bench needs --server HOST:PORT");
  if (!args.positional.empty()) return Usage("bench takes no arguments");
  TokenFromEnvironment(security);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(security.ca_file, security.cert_file,
                             security.key_file);
  if (!credentials.ok()) return Usage(credentials.status().message());
  options.channel = grpc::CreateChannel(options.target, *credentials);
  options.auth_token = security.token;
  QuantdClient probe(options.channel, security.token);
  if (absl::StatusOr<v1::ServerInfo> info = probe.GetServerInfo(); !info.ok()) {
    std::fprintf(stderr, "quantctl: server %s: %s\n", options.target.c_str(),
                 info.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<LoadReport> report = RunLoad(options);
  if (!report.ok()) return Usage(report.status().message());
  std::cout << FormatLoadReport(*report);
  std::cout.flush();
  if (!report_path.empty()) {
    std::ofstream out(report_path, std::ios::trunc);
    out << WritePrettyJson(LoadReportToJson(*report)) << "\n";
    if (!out) {
      std::fprintf(stderr, "quantctl: cannot write %s\n", report_path.c_str());
      return 1;
    }
  }
  return report->unexpected == 0 && report->good_failed == 0 ? 0 : 1;
}

int Main(int argc, char** argv) {
  if (argc < 2) return Usage("no command");
  absl::string_view command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "--version") {
    std::printf("quantctl %s (%s)\n", QUANTD_VERSION, QUANTD_GIT_REV);
    return 0;
  }
  std::string error;
  std::optional<Args> args = ParseArgs(argc, argv, 2, error);
  if (!args) return Usage(error);
  for (const auto& flag : args->flags) {
    if (flag.first == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  if (command == "quantize") return Quantize(*args);
  if (command == "info") return Info(*args);
  if (command == "bench") return Bench(*args);
  return Usage(absl::StrCat("unknown command \"", command, "\""));
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) { return quantd::Main(argc, argv); }
