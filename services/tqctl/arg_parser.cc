#include "services/tqctl/arg_parser.h"

#include <cctype>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tq::tqctl {

void ArgParser::Option(const std::string& name, const std::string& def, const std::string& help) {
  order_.push_back(name);
  specs_[name] = {def, help, false};
}

void ArgParser::Switch(const std::string& name, const std::string& help) {
  order_.push_back(name);
  specs_[name] = {"", help, true};
}

absl::Status ArgParser::Parse(const std::vector<std::string>& args) {
  bool only_positional = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (only_positional || a.size() < 2 || a[0] != '-' || a == "-") {
      positional_.push_back(a);
      continue;
    }
    if (a == "--") {
      only_positional = true;
      continue;
    }
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(command_, ": unknown option ", a, " (see --help)"));
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    for (char& c : name) c = c == '_' ? '-' : c;
    auto it = specs_.find(name);
    if (it == specs_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(command_, ": unknown option --", name, " (see --help)"));
    }
    if (it->second.is_switch) {
      if (has_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(absl::StrCat(command_, ": --", name, " takes no value"));
      }
      values_[name] = has_value ? value : "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(command_, ": --", name, " needs a value"));
      }
      value = args[++i];
    }
    values_[name] = value;
  }
  return absl::OkStatus();
}

std::string ArgParser::Help() const {
  std::string out = absl::StrCat("usage: ", usage_, "\n\n", description_, "\n\noptions:\n");
  for (const std::string& n : order_) {
    const Spec& s = specs_.at(n);
    std::string left = absl::StrCat("  --", n, s.is_switch ? "" : " VALUE");
    std::string right = s.help;
    if (!s.is_switch && !s.default_value.empty()) absl::StrAppend(&right, " (default: ", s.default_value, ")");
    absl::StrAppendFormat(&out, "%-28s %s\n", left, right);
  }
  absl::StrAppend(&out, "  --help                       show this help\n");
  return out;
}

std::string ArgParser::Get(const std::string& name) const {
  auto it = values_.find(name);
  return it != values_.end() ? it->second : specs_.at(name).default_value;
}

bool ArgParser::IsSet(const std::string& name) const { return values_.count(name) > 0; }

bool ArgParser::GetSwitch(const std::string& name) const { return Get(name) == "true"; }

absl::StatusOr<int> ArgParser::GetInt(const std::string& name, int min, int max) const {
  int v;
  if (!absl::SimpleAtoi(Get(name), &v) || v < min || v > max) {
    return absl::InvalidArgumentError(absl::StrCat(command_, ": --", name, " must be an integer in [",
                                                   min, ", ", max, "], got '", Get(name), "'"));
  }
  return v;
}

absl::StatusOr<double> ArgParser::GetDouble(const std::string& name) const {
  double v;
  if (!absl::SimpleAtod(Get(name), &v)) {
    return absl::InvalidArgumentError(absl::StrCat(command_, ": --", name, " must be a number"));
  }
  return v;
}

absl::StatusOr<uint64_t> ArgParser::GetBytes(const std::string& name) const {
  const std::string s = absl::AsciiStrToLower(Get(name));
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  double num;
  if (i == 0 || !absl::SimpleAtod(s.substr(0, i), &num) || num <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(command_, ": --", name, " must be a size like 5GiB"));
  }
  const std::string unit = s.substr(i);
  const std::map<std::string, double> units = {
      {"", 1},        {"b", 1},       {"k", 1e3},     {"kb", 1e3},    {"m", 1e6},
      {"mb", 1e6},    {"g", 1e9},     {"gb", 1e9},    {"t", 1e12},    {"tb", 1e12},
      {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
  auto it = units.find(unit);
  if (it == units.end()) {
    return absl::InvalidArgumentError(absl::StrCat(command_, ": --", name, ": unknown unit '", unit, "'"));
  }
  return static_cast<uint64_t>(num * it->second);
}

}  // namespace tq::tqctl
