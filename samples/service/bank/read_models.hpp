#pragma once

// The bank service's queries on its SQL read models (the balances and statement tables that
// the projections keep in the journal's file).

#include <cstdint>
#include <mutex>
#include <string>

#include <boost/json/object.hpp>
#include <caf/error.hpp>

struct sqlite3;

namespace service {

/// Creates the file `path` (in WAL mode) and the read models' tables (and
/// `projection_offsets`) in it if missing, so that queries find them whatever the
/// projections' progress. Fails with `annals.unavailable`.
caf::error create_read_model_tables(const std::string& path);

/// One read-only connection to the read-model tables, shared by the query workers (one query
/// at a time). Each query reads one consistent state: the rows and the offset the projection
/// had stored with them. Query failures are thrown as `api_error`s.
class read_models {
public:
  read_models() = default;
  ~read_models();

  read_models(const read_models&) = delete;
  read_models& operator=(const read_models&) = delete;

  /// Opens `path` read-only. Fails with `annals.unavailable`.
  caf::error open(const std::string& path);

  /// Closes the connection; later queries answer 503 "read_model_unavailable".
  void close();

  /// {"offset", "accounts": [{"id", "owner", "balance", "status", "version"}]}: at most
  /// `limit` rows of the balances table with an id above `after`, in id order.
  boost::json::object accounts(const std::string& after, std::uint64_t limit);

  /// {"id", "offset", "lines": [...]}: the statement of account `id`; 404 "not_found" when it
  /// has no line.
  boost::json::object statement(const std::string& id);

private:
  std::mutex mtx_;
  sqlite3* db_ = nullptr;
};

} // namespace service
