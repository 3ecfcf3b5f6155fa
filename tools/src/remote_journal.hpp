#pragma once

// Internal to the annals tool: journals named by a URI (`nats://...?stream=NAME`,
// `postgresql://USER@HOST:PORT/DB`) instead of a SQLite file path. The subcommands read them
// through the journal contract (the stored hash chain of a PostgreSQL journal is read with
// SQL), with bounded blocking waits; a build without the journal a URI names refuses it.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "annals/error.hpp"
#include "annals/persistence/audit.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/journal.hpp"

#include "options.hpp"

namespace annals::tools::detail {

/// True when `arg` names a networked journal (`nats://...`, `postgresql://...` or
/// `postgres://...`), false for a file path.
bool is_journal_uri(std::string_view arg);

/// True when `arg` is a PostgreSQL URI (`postgresql://...` or `postgres://...`).
bool is_postgres_uri(std::string_view arg);

/// A networked journal opened by the tool; closed when destroyed.
class remote_journal {
public:
  virtual ~remote_journal() = default;
  virtual persistence::journal& journal() = 0;
  /// What it is, for headings: e.g. `JetStream stream BANK (R3) at nats://10.0.0.1:4222`.
  virtual std::string describe() const = 0;
  /// Recomputes the journal's hash chains (blocking).
  virtual caf::expected<persistence::verify_report> verify() = 0;
  /// The global hash chain's stored values for the offsets `from`..`to` (inclusive), by
  /// offset, for a journal that stores one (PostgreSQL); nothing for one that does not
  /// (JetStream chains each persistence id). Throws `failure`.
  virtual std::optional<std::map<std::uint64_t, persistence::event_hash>>
  stored_hashes(std::uint64_t from, std::uint64_t to) {
    (void)from;
    (void)to;
    return std::nullopt;
  }
};

/// Opens the journal `uri` names. Without `create` a journal that does not exist yet is an
/// error (reading never creates one); with it (import) it is created. Throws `failure`.
std::unique_ptr<remote_journal> open_remote(const std::string& uri, bool create);

/// How long one blocking read of a remote journal may take before the tool gives up.
inline constexpr std::chrono::milliseconds remote_bound{60'000};

/// The value of a journal call, waited for with `remote_bound`; throws `failure` naming
/// `what` on an error.
template <class T>
T remote_call(std::function<void(persistence::callback<T>)> start, const std::string& what) {
  auto res = persistence::wait_for<T>(std::move(start), remote_bound);
  if (!res)
    fail(what + ": " + render(res.error()));
  return std::move(*res);
}

/// Up to `max` events from `from_offset` on, in offset order.
std::vector<persistence::event_record> read_page(persistence::journal& j, std::uint64_t from_offset,
                                                 std::size_t max);

/// The highest offset (0 for an empty journal).
std::uint64_t remote_head(persistence::journal& j);

#ifdef ANNALS_TOOLS_WITH_JETSTREAM
/// jetstream/open.cpp.
std::unique_ptr<remote_journal> open_jetstream(const std::string& uri, bool create);
#endif

#ifdef ANNALS_TOOLS_WITH_POSTGRES
/// postgres/open.cpp.
std::unique_ptr<remote_journal> open_postgres(const std::string& uri, bool create);
#endif

} // namespace annals::tools::detail
