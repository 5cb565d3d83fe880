// Manifest: the record of an interrupted run that lets a rerun resume.
//
//   QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<Manifest> manifest,
//                           Manifest::Open(partial + ".manifest",
//                                          /*keep_existing=*/resumed));
//   if (const Json* line = manifest->Find("blk.0.attn_q.weight")) ...
//   QUANTD_RETURN_IF_ERROR(manifest->Append(line));  // after the parts
//   manifest->Remove();  // once the output is complete
//
// Thread-safety: Find may be called from any thread (the lines read at Open
// never change); Append may be called concurrently; Remove must not race
// with Append.
#ifndef QUANTD_CLIENT_RESUME_MANIFEST_H_
#define QUANTD_CLIENT_RESUME_MANIFEST_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/json.h"

namespace quantd {

// The partial output's manifest, OUTPUT.partial.manifest: one JSON line per
// tensor whose output parts are complete in OUTPUT.partial, written after
// the parts. A rerun of the same command (same plan, hence the same
// safetensors header) keeps every tensor whose line matches its input
// (CRC-32C), scheme and output kind and whose parts in the file still have
// the CRC-32C the line records; everything else is sent again. A torn last
// line (the writer killed mid-line) is ignored.
class Manifest {
 public:
  static absl::StatusOr<std::unique_ptr<Manifest>> Open(const std::string& path,
                                                        bool keep_existing);
  ~Manifest();

  const Json* Find(const std::string& tensor) const;

  // Appends one line with a single write (O_APPEND): lines never interleave.
  absl::Status Append(const OrderedJson& entry);

  // After the output is complete.
  void Remove();

 private:
  Manifest() = default;
  std::string path_;
  int fd_ = -1;
  absl::flat_hash_map<std::string, Json> entries_;  // fixed after Open
  absl::Mutex mu_;
};

}  // namespace quantd

#endif  // QUANTD_CLIENT_RESUME_MANIFEST_H_
