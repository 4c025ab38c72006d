// File: services/tqctl/remote_compress.h
//
// `tqctl compress --server`: submits the job to a compression server and renders its
// progress stream; Ctrl-C cancels the job (the server removes its partial output).
#ifndef TQSERVE_SERVICES_TQCTL_REMOTE_COMPRESS_H_
#define TQSERVE_SERVICES_TQCTL_REMOTE_COMPRESS_H_

#include "engine/compress/compressor.h"
#include "services/tqctl/grpc_client.h"

namespace tq::tqctl {

// Returns the process exit code.
int RunRemoteCompress(const ServerTarget& target, const CompressOptions& options, bool quiet,
                      bool detach);

}  // namespace tq::tqctl

#endif  // TQSERVE_SERVICES_TQCTL_REMOTE_COMPRESS_H_
