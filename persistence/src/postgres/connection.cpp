#include "postgres/connection.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>

#include "annals/persistence/redact.hpp"

namespace annals::persistence::postgres {

std::uint64_t result::u64(int row, int col) const {
  auto t = text(row, col);
  std::uint64_t x = 0;
  std::from_chars(t.data(), t.data() + t.size(), x);
  return x;
}

std::string result::sqlstate() const {
  if (ptr_ == nullptr)
    return {};
  const char* code = PQresultErrorField(ptr_, PG_DIAG_SQLSTATE);
  return code == nullptr ? std::string{} : std::string{code};
}

caf::expected<connection> connection::open(const std::string& conninfo,
                                           std::chrono::milliseconds timeout) {
  auto secs = std::max<long long>(1, (timeout.count() + 999) / 1000);
  const char* keys[] = {"connect_timeout", "dbname", nullptr};
  auto secs_text = std::to_string(secs);
  // `dbname` given as a connection string is expanded: every keyword of `conninfo` applies.
  const char* values[] = {secs_text.c_str(), conninfo.c_str(), nullptr};
  connection c;
  c.conn_ = PQconnectdbParams(keys, values, 1);
  if (c.conn_ == nullptr)
    return make_error(journal_errc::unavailable, "cannot allocate a PostgreSQL connection");
  if (PQstatus(c.conn_) != CONNECTION_OK)
    return make_error(journal_errc::unavailable, "cannot connect to PostgreSQL ("
                                                   + redact_secrets(conninfo)
                                                   + "): " + one_line(PQerrorMessage(c.conn_)));
  const char* host = PQhost(c.conn_);
  c.where_ =
    std::string{host == nullptr ? "?" : host} + ":" + PQport(c.conn_) + "/" + PQdb(c.conn_);
  return c;
}

result connection::exec(const std::string& sql) const {
  return result{PQexec(conn_, sql.c_str())};
}

result connection::exec(const char* sql, const std::vector<std::string>& params) const {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params)
    values.push_back(p.c_str());
  return result{PQexecParams(conn_, sql, static_cast<int>(values.size()), nullptr, values.data(),
                             nullptr, nullptr, 0)};
}

caf::error connection::failure(const result& res, const std::string& what) const {
  auto state = res.sqlstate();
  std::string msg = res ? one_line(PQresultErrorMessage(res.get())) : "";
  if (msg.empty())
    msg = one_line(PQerrorMessage(conn_));
  auto context = where_ + ": " + what + ": " + msg;
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK || state.rfind("08", 0) == 0
      || state.rfind("57P", 0) == 0)
    return make_error(journal_errc::unavailable, context + " (connection lost)");
  if (state == "23505")
    return make_error(journal_errc::conflict, context);
  if (state == "53100")
    return make_error(journal_errc::disk_full, context);
  if (state == "25006")
    return make_error(journal_errc::read_only, context);
  return make_error(journal_errc::storage_error,
                    context + (state.empty() ? "" : " (SQLSTATE " + state + ")"));
}

caf::error connection::run(const std::string& sql, const std::string& what) const {
  auto res = exec(sql);
  if (!res.ok())
    return failure(res, what);
  return {};
}

caf::error connection::copy(const std::string& sql, std::string_view data,
                            const std::string& what) const {
  result start{PQexec(conn_, sql.c_str())};
  if (start.status() != PGRES_COPY_IN) {
    if (!start.ok())
      return failure(start, what);
    return make_error(journal_errc::storage_error,
                      where_ + ": " + what + ": the statement did not start a COPY FROM STDIN");
  }
  // Pieces of at most 1 MiB: PQputCopyData takes an int length, and libpq buffers each.
  constexpr std::size_t piece = std::size_t{1} << 20;
  std::string send_error;
  for (std::size_t pos = 0; pos < data.size(); pos += piece) {
    auto n = std::min(piece, data.size() - pos);
    if (PQputCopyData(conn_, data.data() + pos, static_cast<int>(n)) != 1) {
      send_error = one_line(PQerrorMessage(conn_));
      break;
    }
  }
  // After a failed send, ending the COPY with a message makes the server fail it.
  if (PQputCopyEnd(conn_, send_error.empty() ? nullptr : "annals: sending the rows failed") != 1
      && send_error.empty())
    send_error = one_line(PQerrorMessage(conn_));
  result failed;
  bool stuck = false;
  while (PGresult* r = PQgetResult(conn_)) {
    result res{r};
    auto st = res.status();
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      // The COPY could not be ended: further results would repeat this one.
      stuck = true;
      break;
    }
    if (!res.ok() && !failed)
      failed = std::move(res);
  }
  if (!send_error.empty())
    return failure(failed, what + ": sending the COPY rows failed (" + send_error + ")");
  if (failed)
    return failure(failed, what);
  if (stuck)
    return make_error(journal_errc::storage_error,
                      where_ + ": " + what
                        + ": the COPY could not be ended: " + one_line(PQerrorMessage(conn_)));
  return {};
}

caf::error closed_error(const std::string& where) {
  return make_error(journal_errc::closed, "the PostgreSQL journal on " + where + " is closed");
}

void append_literal(std::string& sql, std::string_view s) {
  sql += '\'';
  for (char c : s) {
    if (c == '\'')
      sql += '\'';
    sql += c;
  }
  sql += '\'';
}

bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

void append_bytea(std::string& sql, const std::uint8_t* bytes, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  sql += "'\\x";
  for (std::size_t i = 0; i < n; ++i) {
    sql += digits[bytes[i] >> 4];
    sql += digits[bytes[i] & 0xf];
  }
  sql += "'::bytea";
}

void append_copy_text(std::string& out, std::string_view s) {
  std::size_t done = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char escaped;
    switch (s[i]) {
      case '\\':
        escaped = '\\';
        break;
      case '\t':
        escaped = 't';
        break;
      case '\n':
        escaped = 'n';
        break;
      case '\r':
        escaped = 'r';
        break;
      default:
        continue;
    }
    out.append(s.data() + done, i - done);
    out += '\\';
    out += escaped;
    done = i + 1;
  }
  out.append(s.data() + done, s.size() - done);
}

void append_copy_bytea(std::string& out, const std::uint8_t* bytes, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  out += "\\\\x";
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 0xf];
  }
}

std::string limit_of(std::size_t max) {
  return bigint_of(static_cast<std::uint64_t>(max));
}

std::string bigint_of(std::uint64_t x) {
  constexpr auto top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return std::to_string(x > top ? top : x);
}

} // namespace annals::persistence::postgres
