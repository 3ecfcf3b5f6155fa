#pragma once

// A generated shopping history: `carts` carts, a deterministic pseudo-random mix of
// commands run through the cart's own command handlers (annals::testkit, no runtime), and
// the events they persist appended to a journal. A few commands are invalid on purpose
// (removing an item the cart lacks, checking out an empty cart, adding after checkout) and
// are refused. The commands are returned too, so that a test can count from them what the
// events should say.

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/error.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/testkit.hpp"
#include "cart/cart.hpp"

namespace shop {

/// Options of `generate_history`.
struct history_options {
  std::size_t carts = 1000;         ///< carts started (each ends checked out or abandoned)
  std::uint32_t seed = 1;           ///< the same seed gives the same commands and events
  std::size_t open_carts = 64;      ///< carts in progress at a time (their events interleave)
  std::size_t skus = 40;            ///< distinct skus, `sku-00` ...
  std::size_t max_in_flight = 4096; ///< appends waiting for the journal at most
};

/// One command the generator ran, and whether the cart accepted it.
struct command_record {
  enum class kind : std::uint8_t { add, remove, check_out };
  std::uint32_t cart = 0;
  kind what = kind::add;
  std::string sku; // empty for check_out
  std::int64_t qty = 0;
  bool accepted = false;
};

/// What `generate_history` did.
struct generated_history {
  std::vector<command_record> commands;
  std::uint64_t events = 0;
  std::size_t checked_out = 0;
  std::size_t abandoned = 0;
  std::size_t refused = 0;
};

/// The persistence id entity of cart number `n`: `c000042`.
inline std::string cart_id(std::uint32_t n) {
  auto digits = std::to_string(n);
  return "c" + std::string(digits.size() < 6 ? 6 - digits.size() : 0, '0') + digits;
}

/// Runs the generator and appends its events to `j` (a journal without carts: each cart's
/// first append expects sequence 0). Fails with the first failed append's error.
inline caf::expected<generated_history> generate_history(annals::persistence::journal& j,
                                                         history_options opts) {
  using kit_type = annals::testkit<cart>;
  struct live {
    std::uint32_t id = 0;
    kit_type kit;
    std::uint64_t seq = 0;
  };
  struct window {
    std::mutex mtx;
    std::condition_variable cv;
    std::size_t in_flight = 0;
    caf::error first_error;
  };
  auto win = std::make_shared<window>();
  std::mt19937 rng{opts.seed};
  // Lower sku numbers are more popular; each sku has its own chance of being taken out.
  auto pick_sku = [&] {
    auto n = std::min(rng() % opts.skus, rng() % opts.skus);
    return n;
  };
  auto sku_name = [](std::size_t n) {
    return std::string{"sku-"} + (n < 10 ? "0" : "") + std::to_string(n);
  };
  auto regret_percent = [](std::size_t n) { return 5 + (n * 37) % 60; };

  generated_history out;
  std::vector<std::unique_ptr<live>> open;
  std::uint32_t next = 0;
  auto run = [&](live& c, auto cmd, command_record rec) {
    auto res = c.kit.when(std::move(cmd));
    bool accepted = static_cast<bool>(res.reply);
    rec.accepted = accepted;
    if (!accepted)
      ++out.refused;
    out.commands.push_back(std::move(rec));
    if (res.events.empty())
      return accepted;
    std::vector<annals::encoded_event> events;
    for (const auto& e : res.events)
      events.push_back(cart::codec_type::encode(e));
    annals::persistence::append_request req{"cart|" + cart_id(c.id), c.seq, std::move(events), {}};
    c.seq += res.events.size();
    out.events += res.events.size();
    {
      std::unique_lock lk{win->mtx};
      win->cv.wait(lk, [&] { return win->in_flight < opts.max_in_flight; });
      ++win->in_flight;
    }
    j.append(std::move(req), [win](caf::expected<annals::persistence::append_result> r) {
      std::lock_guard guard{win->mtx};
      --win->in_flight;
      if (!r && !win->first_error)
        win->first_error = std::move(r.error());
      win->cv.notify_all();
    });
    return accepted;
  };
  using kind = command_record::kind;
  while (next < opts.carts || !open.empty()) {
    while (open.size() < opts.open_carts && next < opts.carts) {
      open.push_back(std::make_unique<live>());
      open.back()->id = next++;
    }
    auto i = rng() % open.size();
    auto& c = *open[i];
    const auto& items = c.kit.state().items;
    auto r = rng() % 100;
    bool done = false;
    if (r >= 75 && r < 88) {
      if (run(c, check_out{}, {c.id, kind::check_out, "", 0, false})) {
        ++out.checked_out;
        done = true;
        if (rng() % 10 == 0) { // a late addition, refused
          auto sku = sku_name(pick_sku());
          run(c, add_item{sku, 1}, {c.id, kind::add, sku, 1, false});
        }
      }
    } else if (r >= 88 && r < 91) {
      ++out.abandoned;
      done = true;
    } else if (!items.empty() && r >= 50 && r < 72) {
      auto it = items.begin();
      std::advance(it, static_cast<long>(rng() % items.size()));
      auto idx = static_cast<std::size_t>(std::stoul(it->first.substr(4)));
      if (rng() % 100 < regret_percent(idx)) {
        auto sku = it->first;
        auto qty = static_cast<std::int64_t>(1 + rng() % static_cast<std::uint64_t>(it->second));
        run(c, remove_item{sku, qty}, {c.id, kind::remove, sku, qty, false});
      } else {
        auto sku = sku_name(pick_sku());
        run(c, add_item{sku, 1}, {c.id, kind::add, sku, 1, false});
      }
    } else if (r >= 72 && r < 75) {
      // A removal the cart refuses: an item it lacks, or more than it holds.
      auto sku = sku_name(pick_sku());
      auto held = items.find(sku);
      auto qty = held == items.end() ? std::int64_t{1} : held->second + 1;
      run(c, remove_item{sku, qty}, {c.id, kind::remove, sku, qty, false});
    } else {
      auto sku = sku_name(pick_sku());
      auto qty = static_cast<std::int64_t>(1 + rng() % 3);
      run(c, add_item{sku, qty}, {c.id, kind::add, sku, qty, false});
    }
    if (done) {
      std::swap(open[i], open.back());
      open.pop_back();
    }
  }
  std::unique_lock lk{win->mtx};
  win->cv.wait(lk, [&] { return win->in_flight == 0; });
  if (win->first_error)
    return win->first_error;
  return out;
}

} // namespace shop
