// File: services/common/log.h
//
// Structured logs: one JSON object per line on stderr, with a UTC timestamp, level and message
// plus key/value fields.
//   LogInfo("job finished", {{"job_id", id}, {"state", "succeeded"}});
#ifndef TQSERVE_SERVICES_COMMON_LOG_H_
#define TQSERVE_SERVICES_COMMON_LOG_H_

#include <string>
#include <utility>
#include <vector>

namespace tq {

using LogFields = std::vector<std::pair<std::string, std::string>>;

void Log(const char* level, const std::string& message, const LogFields& fields = {});
inline void LogInfo(const std::string& m, const LogFields& f = {}) { Log("info", m, f); }
inline void LogWarning(const std::string& m, const LogFields& f = {}) { Log("warning", m, f); }
inline void LogError(const std::string& m, const LogFields& f = {}) { Log("error", m, f); }

}  // namespace tq

#endif  // TQSERVE_SERVICES_COMMON_LOG_H_
