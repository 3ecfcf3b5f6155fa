#pragma once

// Small aggregates and ports shared by the framework tests.

#include <cstdint>
#include <string>
#include <vector>

#include <boost/describe.hpp>

#include "annals/aggregate.hpp"

namespace fx {

struct noted {
  static constexpr auto name = "fx.noted";
  std::string text;
  friend bool operator==(const noted&, const noted&) = default;
};
struct counted {
  static constexpr auto name = "fx.counted";
  std::int64_t n;
  friend bool operator==(const counted&, const counted&) = default;
};
BOOST_DESCRIBE_STRUCT(noted, (), (text))
BOOST_DESCRIBE_STRUCT(counted, (), (n))

enum class fx_errc : std::uint8_t { too_big = 1, empty_text };
BOOST_DESCRIBE_ENUM(fx_errc, too_big, empty_text)
constexpr std::string_view error_category(fx_errc) {
  return "fx";
}

struct notebook_state {
  std::vector<std::string> notes;
  std::int64_t total = 0;
  void apply(const noted& e) {
    notes.push_back(e.text);
  }
  void apply(const counted& e) {
    total += e.n;
  }
  friend bool operator==(const notebook_state&, const notebook_state&) = default;
};

struct note {
  std::string text;
};
struct note_twice {
  std::string first;
  std::string second;
};
struct note_and_count {
  std::string text;
  std::int64_t n;
};
struct add {
  std::int64_t n;
};
struct explode {};
struct reject_me {};
struct get_total {};

class notebook : public annals::aggregate<notebook_state, noted, counted> {
public:
  // Copies the command's text only after the persist: the command must live in the frame.
  annals::task<std::string> handle(note cmd) {
    if (cmd.text.empty())
      co_return fx_errc::empty_text;
    noted e{"note:" + cmd.text.substr(0, 1)};
    co_await persist(e);
    co_return cmd.text;
  }

  annals::task<std::size_t> handle(note_twice cmd) {
    noted a{cmd.first};
    co_await persist(a);
    noted b{cmd.second};
    co_await persist(b);
    co_return state().notes.size();
  }

  annals::task<std::int64_t> handle(note_and_count cmd) {
    noted a{cmd.text};
    co_await persist(a, counted{cmd.n});
    co_return state().total;
  }

  annals::task<std::int64_t> handle(add cmd) {
    if (cmd.n > 1000)
      co_return fx_errc::too_big;
    co_await persist(counted{cmd.n});
    co_return state().total;
  }

  annals::task<void> handle(explode) {
    co_await persist(counted{1});
    throw std::runtime_error{"boom after persist"};
  }

  annals::task<void> handle(reject_me) {
    throw annals::rejected{fx_errc::too_big, "rejected from deep inside"};
    co_return;
  }

  std::int64_t handle(get_total) const {
    return state().total;
  }
};

// A port that holds every persist until the test releases it, like a journal would.
class manual_port : public annals::persist_port {
public:
  bool begin(annals::pending_persist& op) override {
    pending = &op;
    return true;
  }

  // Commits the pending write: applies its events and resumes the handler.
  void commit() {
    auto* op = std::exchange(pending, nullptr);
    committed.insert(committed.end(), op->events.begin(), op->events.end());
    op->apply();
    op->continuation.resume();
  }

  annals::pending_persist* pending = nullptr;
  std::vector<annals::encoded_event> committed;
};

} // namespace fx
