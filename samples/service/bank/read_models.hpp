#pragma once

// The bank service's queries on its SQL read models (the balances and statement tables that
// the exactly-once projections keep): in a SQLite file (the journal's own when the journal
// is SQLite), or in the journal's PostgreSQL database (postgres_read_models.hpp).

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/json/object.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "account/statement.hpp"

struct sqlite3;

namespace service {

/// The queries the routes run. Each query reads one consistent state: the rows and the
/// offset the projection had stored with them. Query failures are thrown as `api_error`s
/// (503 "read_model_unavailable"). Calls may come from several query workers at once.
class read_models {
public:
  virtual ~read_models();

  /// Closes the connection; later queries answer 503 "read_model_unavailable".
  virtual void close() = 0;

  /// {"offset", "accounts": [{"id", "owner", "balance", "status", "version"}]}: at most
  /// `limit` rows of the balances table with an id above `after`, in id order.
  virtual boost::json::object accounts(const std::string& after, std::uint64_t limit) = 0;

  /// {"id", "offset", "lines": [...]}: the statement of account `id`; 404 "not_found" when it
  /// has no line.
  virtual boost::json::object statement(const std::string& id) = 0;
};

/// Creates the file `path` (in WAL mode) and the read models' tables (and
/// `projection_offsets`) in it if missing, so that queries find them whatever the
/// projections' progress. Fails with `annals.unavailable`.
caf::error create_read_model_tables(const std::string& path);

/// The read models in the SQLite file `path` (made by `create_read_model_tables`), through
/// one read-only connection. Fails with `annals.unavailable`.
caf::expected<std::unique_ptr<read_models>> open_sqlite_read_models(const std::string& path);

/// The reply of `read_models::statement` for `lines` read at `offset`; 404 "not_found"
/// when there is no line.
boost::json::object statement_reply(const std::string& id, std::uint64_t offset,
                                    const std::vector<bank::statement_line>& lines);

} // namespace service
