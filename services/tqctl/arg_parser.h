// File: services/tqctl/arg_parser.h
//
// A small per-subcommand option parser for tqctl: `--name value`, `--name=value`, boolean
// `--name`, positional arguments, `--help`. Hyphenated names as users type them
// (`--group-size`); unknown options and missing or malformed values are errors.
#ifndef TQSERVE_SERVICES_TQCTL_ARG_PARSER_H_
#define TQSERVE_SERVICES_TQCTL_ARG_PARSER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tq::tqctl {

class ArgParser {
 public:
  ArgParser(std::string command, std::string usage, std::string description)
      : command_(std::move(command)), usage_(std::move(usage)), description_(std::move(description)) {}

  // Declares a value option with a default ("" = no default) or a boolean switch.
  void Option(const std::string& name, const std::string& default_value, const std::string& help);
  void Switch(const std::string& name, const std::string& help);

  // Parses args (without the program and command names). Sets help_requested() on --help.
  absl::Status Parse(const std::vector<std::string>& args);

  bool help_requested() const { return help_; }
  std::string Help() const;
  const std::vector<std::string>& positional() const { return positional_; }

  std::string Get(const std::string& name) const;
  bool IsSet(const std::string& name) const;  // given on the command line
  bool GetSwitch(const std::string& name) const;
  absl::StatusOr<int> GetInt(const std::string& name, int min, int max) const;
  absl::StatusOr<double> GetDouble(const std::string& name) const;
  // Sizes like "5GiB", "200KiB", "1000000", "2GB".
  absl::StatusOr<uint64_t> GetBytes(const std::string& name) const;

 private:
  struct Spec {
    std::string default_value;
    std::string help;
    bool is_switch = false;
  };
  std::string command_, usage_, description_;
  std::vector<std::string> order_;
  std::map<std::string, Spec> specs_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

}  // namespace tq::tqctl

#endif  // TQSERVE_SERVICES_TQCTL_ARG_PARSER_H_
