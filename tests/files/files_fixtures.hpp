#pragma once

// Helpers of the files-projection tests: a journal history of bank accounts, the statements
// it should produce (computed here from the stored records, not by the projection's code),
// and a check of a statements directory against them.

#include <cstdint>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "account/account.hpp"
#include "account/statement_files.hpp"
#include "annals/actors/file_projection.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/persistence_id.hpp"

namespace files_test {

using annals::persistence::journal;

inline constexpr std::chrono::milliseconds wait_bound{30'000};

/// One statement line as the history says it should be.
struct expected_line {
  std::uint64_t seq = 0;
  std::uint64_t offset = 0;
  std::string kind;
  std::int64_t amount = 0;
  std::int64_t balance = 0;
};

/// Statement file name -> its lines, in journal order.
using expected_statements = std::map<std::string, std::vector<expected_line>>;

/// Appends account events over `accounts` accounts (each opened first, then deposits and
/// withdrawals that keep the balance >= 0), 1 to 3 events per append, in an order drawn
/// from `seed`; later calls continue the same accounts.
class history {
public:
  history(std::size_t accounts, std::uint32_t seed)
    : rng_(seed), seq_(accounts, 0), balance_(accounts, 0) {}

  /// Appends `events` more events; returns an error text, empty on success.
  std::string write(journal& j, std::size_t events) {
    using codec = bank::account::codec_type;
    auto& rng = rng_;
    auto& seq = seq_;
    auto& balance = balance_;
    auto accounts = seq_.size();
    std::size_t written = 0;
    while (written < events) {
      auto a = std::uniform_int_distribution<std::size_t>{0, accounts - 1}(rng);
      auto n = std::uniform_int_distribution<std::size_t>{1, 3}(rng);
      std::vector<annals::encoded_event> batch;
      for (std::size_t i = 0; i < n && written + batch.size() < events; ++i) {
        if (seq[a] + batch.size() == 0) {
          batch.push_back(codec::encode(bank::opened{"owner-" + std::to_string(a)}));
          continue;
        }
        auto cents = std::uniform_int_distribution<std::int64_t>{1, 500}(rng);
        if (cents <= balance[a] && rng() % 3 == 0) {
          balance[a] -= cents;
          batch.push_back(codec::encode(bank::withdrawn{cents}));
        } else {
          balance[a] += cents;
          batch.push_back(codec::encode(bank::deposited{cents}));
        }
      }
      auto count = batch.size();
      annals::persistence::append_request req{
        "account|acc-" + std::to_string(a), seq[a], std::move(batch), {}};
      auto res = annals::persistence::wait_for<annals::persistence::append_result>(
        [&](annals::persistence::callback<annals::persistence::append_result> done) {
          j.append(std::move(req), std::move(done));
        },
        wait_bound);
      if (!res)
        return "append failed: " + annals::render(res.error());
      seq[a] = res->last_seq;
      written += count;
    }
    return {};
  }

private:
  std::mt19937 rng_;
  std::vector<std::uint64_t> seq_;
  std::vector<std::int64_t> balance_;
};

/// One history of `events` events over `accounts` accounts; see `history`.
inline std::string write_history(journal& j, std::size_t accounts, std::size_t events,
                                 std::uint32_t seed) {
  return history{accounts, seed}.write(j, events);
}

/// Every record of `j`, in offset order.
inline caf::expected<std::vector<annals::persistence::event_record>> all_records(journal& j) {
  return annals::persistence::wait_for<std::vector<annals::persistence::event_record>>(
    [&](annals::persistence::callback<std::vector<annals::persistence::event_record>> done) {
      j.read_all(1, SIZE_MAX, std::move(done));
    },
    wait_bound);
}

/// The statements the account records in `records` make, folded here from the stored JSON.
inline expected_statements
statements_of(const std::vector<annals::persistence::event_record>& records) {
  expected_statements out;
  std::map<std::string, std::int64_t> balance;
  for (const auto& rec : records) {
    if (!rec.persistence_id.starts_with("account|"))
      continue;
    auto id = std::string{annals::persistence_id::entity_of(rec.persistence_id)};
    expected_line line{rec.seq, rec.offset, "", 0, 0};
    if (rec.name == "bank.opened") {
      line.kind = "opened";
    } else if (rec.name == "bank.closed") {
      line.kind = "closed";
    } else {
      auto cents =
        boost::json::parse(rec.payload).as_object().at("cents").to_number<std::int64_t>();
      line.kind = rec.name == "bank.deposited" ? "deposit" : "withdrawal";
      line.amount = cents;
      balance[id] += rec.name == "bank.deposited" ? cents : -cents;
    }
    line.balance = balance[id];
    out[bank::statement_files::file_name(id)].push_back(line);
  }
  return out;
}

/// Checks the statement files in `dir` against `expected`: every file parses line by line
/// (no torn line) and holds exactly the expected lines up to its header offset, each once;
/// and every event at or below the projection's stored offset is in its file. Returns the
/// first problem found, empty if none.
inline std::string check_statements(const std::string& dir, const expected_statements& expected) {
  auto stored = annals::actors::read_stored_offset(dir);
  if (!stored)
    return "stored offset: " + annals::render(stored.error());
  for (const auto& [name, lines] : expected) {
    std::size_t due = 0; // lines the stored offset says the file must hold
    while (due < lines.size() && lines[due].offset <= *stored)
      ++due;
    if (!std::filesystem::exists(std::filesystem::path{dir} / name)) {
      if (due > 0)
        return name + " is missing though the stored offset is " + std::to_string(*stored);
      continue;
    }
    auto file = annals::actors::read_model_file(dir, name);
    if (!file)
      return annals::render(file.error());
    std::size_t held = 0; // lines the file's header says it holds
    while (held < lines.size() && lines[held].offset <= file->offset)
      ++held;
    if (held < due)
      return name + " holds events up to offset " + std::to_string(file->offset)
             + ", behind the stored offset " + std::to_string(*stored);
    std::istringstream in{file->content};
    std::string text;
    std::size_t i = 0;
    while (std::getline(in, text)) {
      boost::json::value v;
      try {
        v = boost::json::parse(text);
      } catch (const std::exception& e) {
        return name + " line " + std::to_string(i + 1) + " does not parse (" + e.what()
               + "): " + text;
      }
      if (i >= held)
        return name + " has more lines than its header offset " + std::to_string(file->offset)
               + " allows: " + text;
      const auto& o = v.as_object();
      const auto& want = lines[i];
      if (o.at("seq").to_number<std::uint64_t>() != want.seq
          || o.at("offset").to_number<std::uint64_t>() != want.offset
          || o.at("kind").as_string() != want.kind
          || o.at("amount").to_number<std::int64_t>() != want.amount
          || o.at("balance").to_number<std::int64_t>() != want.balance)
        return name + " line " + std::to_string(i + 1) + " is " + text + ", expected seq "
               + std::to_string(want.seq) + " offset " + std::to_string(want.offset) + " "
               + want.kind + " " + std::to_string(want.amount) + " balance "
               + std::to_string(want.balance);
      ++i;
    }
    if (!file->content.empty() && file->content.back() != '\n')
      return name + " ends in a line without its newline";
    if (i != held)
      return name + " has " + std::to_string(i) + " lines, its header offset "
             + std::to_string(file->offset) + " says " + std::to_string(held);
  }
  for (const auto& entry : std::filesystem::directory_iterator{dir}) {
    auto n = entry.path().filename().string();
    if (!n.starts_with(".") && !expected.contains(n))
      return "unexpected file " + n;
  }
  return {};
}

} // namespace files_test
