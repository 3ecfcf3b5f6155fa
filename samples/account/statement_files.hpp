#pragma once

// The `statement` read model again, as files: one JSON-lines file per account
// (`<account id>.jsonl`) with a line per event and the balance after it, kept by a files
// projection (annals/actors/file_projection.hpp), exactly once per file across crashes.
//
// A line:
//   {"seq":2,"offset":7,"kind":"deposit","amount":100,"balance":100,"correlation_id":"",
//    "timestamp_ms":1700000000000}
//
// The running balance comes from the file's own last line (read through the batch), not
// from members: a batch replayed after a crash drops the writes the file holds already,
// and the file stays the fold of its events.

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "account/account.hpp"
#include "account/statement.hpp"
#include "annals/actors/file_projection.hpp"
#include "annals/actors/typed_projection.hpp"

namespace bank {

class statement_files : public annals::actors::typed_file_projection<statement_files, account> {
public:
  template <class E>
  void on(const E& e, const annals::actors::envelope& env, annals::actors::file_batch& files) {
    auto m = movement_of(e);
    auto name = file_name(env.entity_id());
    auto balance = last_balance(files.read(name)) + m.delta;
    boost::json::object line{
      {"seq", env.seq()},
      {"offset", env.offset()},
      {"kind", m.kind},
      {"amount", m.amount},
      {"balance", balance},
      {"correlation_id", env.correlation_id()},
      {"timestamp_ms", statement_projection::to_epoch_ms(env.timestamp_us())},
    };
    files.append_line(name, boost::json::serialize(line));
  }

  /// The file of account `id`: `<id>.jsonl`, with every byte outside `[A-Za-z0-9_-]`
  /// written as `%XX` (so no id makes a path, a hidden file or `..`).
  static std::string file_name(std::string_view id) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : id) {
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
          || c == '_') {
        out.push_back(static_cast<char>(c));
      } else {
        out.push_back('%');
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 0xF]);
      }
    }
    return out + ".jsonl";
  }

  /// The balance on the last line of a statement file's content; 0 for none.
  static std::int64_t last_balance(std::string_view content) {
    if (content.empty())
      return 0;
    content.remove_suffix(1); // the last line's '\n'
    auto start = content.rfind('\n');
    auto last = start == std::string_view::npos ? content : content.substr(start + 1);
    return boost::json::parse(last).as_object().at("balance").to_number<std::int64_t>();
  }
};

} // namespace bank
