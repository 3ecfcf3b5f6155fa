#pragma once

// libpq handles that close themselves, the mapping of PostgreSQL's errors onto
// `journal_errc`, and the SQL text helpers the journal's threads share.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <libpq-fe.h>

#include "annals/persistence/journal.hpp"

namespace annals::persistence::postgres {

/// A query result; cleared on destruction.
class result {
public:
  result() = default;
  explicit result(PGresult* r) : ptr_(r) {}
  ~result() {
    if (ptr_ != nullptr)
      PQclear(ptr_);
  }
  result(result&& other) noexcept : ptr_(other.ptr_) {
    other.ptr_ = nullptr;
  }
  result& operator=(result&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    return *this;
  }
  result(const result&) = delete;
  result& operator=(const result&) = delete;

  PGresult* get() const {
    return ptr_;
  }
  explicit operator bool() const {
    return ptr_ != nullptr;
  }
  ExecStatusType status() const {
    return ptr_ == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(ptr_);
  }
  bool ok() const {
    auto st = status();
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  }
  int rows() const {
    return PQntuples(ptr_);
  }
  bool null(int row, int col) const {
    return PQgetisnull(ptr_, row, col) != 0;
  }
  std::string_view text(int row, int col) const {
    return {PQgetvalue(ptr_, row, col), static_cast<std::size_t>(PQgetlength(ptr_, row, col))};
  }
  std::uint64_t u64(int row, int col) const;
  /// The five-character SQLSTATE of an error result ("" for none).
  std::string sqlstate() const;

private:
  PGresult* ptr_ = nullptr;
};

/// A connection; finished on destruction.
class connection {
public:
  connection() = default;
  ~connection() {
    reset();
  }
  connection(connection&& other) noexcept : conn_(other.conn_), where_(std::move(other.where_)) {
    other.conn_ = nullptr;
  }
  connection& operator=(connection&& other) noexcept {
    std::swap(conn_, other.conn_);
    std::swap(where_, other.where_);
    return *this;
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// Connects to `conninfo`, waiting at most `timeout`; `journal_errc::unavailable` naming
  /// the server and libpq's message if that fails.
  static caf::expected<connection> open(const std::string& conninfo,
                                        std::chrono::milliseconds timeout);

  PGconn* get() const {
    return conn_;
  }
  /// False once the connection broke (or was never made).
  bool alive() const {
    return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK;
  }
  void reset() {
    if (conn_ != nullptr)
      PQfinish(conn_);
    conn_ = nullptr;
  }
  /// `host:port/dbname`, for error messages.
  const std::string& where() const {
    return where_;
  }

  /// Runs `sql` (several statements allowed, no parameters); the last statement's result.
  result exec(const std::string& sql) const;

  /// Runs one statement with text parameters.
  result exec(const char* sql, const std::vector<std::string>& params) const;

  /// The error of a failed `res` (or of the connection, for a missing result), described as
  /// `what`: `unavailable` if the connection broke, `conflict` for 23505, `disk_full` for
  /// 53100, `storage_error` otherwise.
  caf::error failure(const result& res, const std::string& what) const;

  /// Runs `sql` and turns a failure into an error (see `failure`).
  caf::error run(const std::string& sql, const std::string& what) const;

  /// Runs `sql`, a `COPY ... FROM STDIN` in text format, with `data` as its rows (each
  /// ending in a newline, fields escaped with `append_copy_text`). An error (see `failure`)
  /// if the statement does not start a COPY, sending the rows fails, or the server refuses
  /// them; the connection is idle again afterwards unless it broke.
  caf::error copy(const std::string& sql, std::string_view data, const std::string& what) const;

private:
  PGconn* conn_ = nullptr;
  std::string where_;
};

/// `journal_errc::closed` for an operation submitted after `close`.
caf::error closed_error(const std::string& where);

/// `s` as an SQL string literal (standard_conforming_strings, which PostgreSQL 15 always
/// has on): quotes doubled. Text with a NUL byte cannot be stored; `has_nul` tells.
void append_literal(std::string& sql, std::string_view s);
bool has_nul(std::string_view s);

/// `bytes` as a bytea literal in hex form: `'\x0a1b...'::bytea`.
void append_bytea(std::string& sql, const std::uint8_t* bytes, std::size_t n);

/// `s` as a field of COPY's text format: backslash, tab, newline and carriage return
/// escaped with a backslash, every other byte as it is.
void append_copy_text(std::string& out, std::string_view s);

/// `bytes` as a bytea field of COPY's text format in hex form: `\\x0a1b...`.
void append_copy_bytea(std::string& out, const std::uint8_t* bytes, std::size_t n);

/// A `std::size_t` bound for a LIMIT parameter, clamped to INT64_MAX.
std::string limit_of(std::size_t max);

/// A `std::uint64_t` for a bigint parameter, clamped to INT64_MAX.
std::string bigint_of(std::uint64_t x);

} // namespace annals::persistence::postgres
