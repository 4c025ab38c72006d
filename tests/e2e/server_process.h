// File: tests/e2e/server_process.h  (testonly)
//
// Runs a server binary as a child process for end-to-end tests: passes --port_file, waits until
// the server wrote its ports, captures its log, stops it with a signal and reports how it exited.
#ifndef TQSERVE_TESTS_E2E_SERVER_PROCESS_H_
#define TQSERVE_TESTS_E2E_SERVER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tq::testing {

class ServerProcess {
 public:
  // Starts `binary args... --port_file=<tmp>` and waits (up to 30 s) for the port file.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::string& binary,
                                                              std::vector<std::string> args,
                                                              const std::string& name);
  ~ServerProcess();  // SIGKILL if still running

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::string Log() const;

  void Signal(int sig);
  // Waits for the process to exit (up to `timeout_s`); its exit code, or -signal if killed.
  absl::StatusOr<int> Wait(int timeout_s);

 private:
  pid_t pid_ = -1;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  std::string log_path_;
};

// GET http://127.0.0.1:port/path, the body.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// Runs a command line through /bin/sh; its exit code and combined output.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult RunCommand(const std::string& command_line);

}  // namespace tq::testing

#endif  // TQSERVE_TESTS_E2E_SERVER_PROCESS_H_
