// File: services/tqctl/commands.h
//
// tqctl subcommands. Each takes the arguments after its name and returns the process exit code
// (0 ok, 1 the operation failed, 2 bad usage).
#ifndef TQSERVE_SERVICES_TQCTL_COMMANDS_H_
#define TQSERVE_SERVICES_TQCTL_COMMANDS_H_

#include <string>
#include <vector>

namespace tq::tqctl {

int RunCompress(const std::vector<std::string>& args);
int RunInspect(const std::vector<std::string>& args);
int RunVerify(const std::vector<std::string>& args);
int RunList(const std::vector<std::string>& args);
int RunJob(const std::vector<std::string>& args);
int RunGenerate(const std::vector<std::string>& args);
int RunEvalPpl(const std::vector<std::string>& args);
int RunInfo(const std::vector<std::string>& args);
int RunBench(const std::vector<std::string>& args);

}  // namespace tq::tqctl

#endif  // TQSERVE_SERVICES_TQCTL_COMMANDS_H_
