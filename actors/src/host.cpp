#include "annals/actors/host.hpp"

#include "annals/actors/system.hpp"
#include "annals/utf8.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <iostream>
#include <list>
#include <optional>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include <caf/all.hpp>

namespace annals::actors {

namespace detail {

int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

} // namespace detail

struct host::shared {
  struct type_entry {
    const void* token;
    spawn_fn spawn;
  };
  mutable std::mutex mtx;
  std::unordered_map<std::string, type_entry> types;
  std::unordered_map<const void*, std::string> names;

  caf::expected<spawn_fn> spawner(const std::string& type_name) const {
    std::lock_guard guard{mtx};
    auto i = types.find(type_name);
    if (i == types.end())
      return make_error(errc::invalid_argument, "unknown aggregate type '" + type_name + "'");
    return i->second.spawn;
  }
};

namespace {

using detail::envelope;
using detail::reply_msg;
using clock_type = std::chrono::steady_clock;

} // namespace

namespace detail {

using waiting_list = std::vector<std::pair<envelope, caf::typed_response_promise<reply_msg>>>;

// A route's key, the persistence id `type|id`, inline up to 24 bytes in 32 (a std::string
// keeps 15 inline, so `account|acc-000042` would need a heap block of its own in every
// entry); with the route and the node's link, an entry is one 56-byte block.
class route_key {
public:
  explicit route_key(std::string_view s) {
    if (s.size() <= inline_max) {
      std::memcpy(buf_, s.data(), s.size());
      size_ = static_cast<std::uint8_t>(s.size());
    } else {
      heap_.data = new char[s.size()];
      std::memcpy(heap_.data, s.data(), s.size());
      heap_.size = s.size();
      size_ = on_heap;
    }
  }
  ~route_key() {
    if (size_ == on_heap)
      delete[] heap_.data;
  }
  route_key(const route_key&) = delete;
  route_key& operator=(const route_key&) = delete;

  std::string_view view() const noexcept {
    return size_ == on_heap ? std::string_view{heap_.data, heap_.size}
                            : std::string_view{buf_, size_};
  }

private:
  static constexpr std::size_t inline_max = 24;
  static constexpr std::uint8_t on_heap = 0xff;
  struct heap_key {
    char* data;
    std::size_t size;
  };
  union {
    char buf_[inline_max];
    heap_key heap_;
  };
  std::uint8_t size_;
};

static_assert(sizeof(route_key) == 32);

// Transparent (lookups by string_view) and noexcept, which also keeps libstdc++ from
// storing each hash in its node.
struct route_key_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
  std::size_t operator()(const route_key& k) const noexcept {
    return (*this)(k.view());
  }
};

struct route_key_eq {
  using is_transparent = void;
  static std::string_view view(std::string_view s) noexcept {
    return s;
  }
  static std::string_view view(const route_key& k) noexcept {
    return k.view();
  }
  template <class X, class Y>
  bool operator()(const X& x, const Y& y) const noexcept {
    return view(x) == view(y);
  }
};

// One aggregate id, live, stopping or about to be spawned. The registry alone spawns,
// stops and forgets actors; clients read `actor` and `stopping` and count `via_registry`.
// Both under the shard's mutex.
struct route {
  caf::actor actor;               // null until the registry spawned it
  std::uint32_t via_registry = 0; // counted envelopes on their way through the registry
  bool stopping = false;          // asked to stop: commands go through the registry
};

// The routes of live aggregates, split in shards by key to keep the clients' locks short;
// and the deadlines of the requests that clients sent through `host::send_command`.
//
// Why commands keep their order: a client sends straight to `actor` only while no counted
// envelope for the id is on its way through the registry (the registry uncounts each one
// after it delegated it), and sends under the shard's lock, which the registry takes to mark
// the route stopping before it sends the stop: a command sent straight to an actor is in its
// mailbox before the stop, so the actor handles it before it quits, and a later one goes
// through the registry, which parks it for the successor.
struct router {
  struct shard {
    std::mutex mtx;
    std::unordered_map<route_key, route, route_key_hash, route_key_eq> routes;

    // The route of `key`, created if there is none (under `mtx`).
    std::pair<const route_key, route>& get(std::string_view key) {
      auto i = routes.find(key);
      if (i == routes.end())
        i = routes.emplace(std::piecewise_construct, std::forward_as_tuple(key), std::tuple<>{})
              .first;
      return *i;
    }
  };
  static constexpr std::size_t shard_count = 64;
  std::array<shard, shard_count> shards;
  bool direct = true; // false with `max_live`: the registry must see every command (LRU)

  shard& shard_of(std::string_view key) {
    return shards[route_key_hash{}(key) % shard_count];
  }

  // The deadline list: one FIFO per distinct timeout (deadlines in a FIFO come in order),
  // and at most one pending tick on the registry for the earliest deadline; a reply takes
  // its entry off, so nothing stays behind it (a CAF request timeout stays in CAF's clock
  // until it expires and is then delivered and dropped).
  struct deadline {
    clock_type::time_point due;
    caf::actor_addr requester;
    caf::message_id response_id;
    bool done = false;
  };
  struct fifo {
    std::chrono::milliseconds timeout;
    std::deque<deadline> entries;
    std::uint64_t base = 0; // sequence number of entries.front()
  };
  std::mutex deadlines_mtx;
  std::vector<fifo> fifos;
  bool tick_armed = false;
  clock_type::time_point tick_due;
  bool closed = false; // the registry is gone: CAF's clock takes the deadlines

  static constexpr int seq_bits = 48;

  // Under `deadlines_mtx`.
  void arm(const caf::actor& registry, clock_type::time_point due) {
    tick_armed = true;
    tick_due = due;
    auto in = std::chrono::ceil<std::chrono::milliseconds>(due - clock_type::now());
    caf::delayed_anon_send(registry, std::max(in, std::chrono::milliseconds{1}),
                           deadline_atom::value);
  }

  // Returns the token of the new deadline, 0 if there is none (the registry is gone: the
  // request goes nowhere and bounces at once).
  std::uint64_t add(const caf::actor& registry, caf::actor_addr requester, caf::message_id rid,
                    std::chrono::milliseconds timeout) {
    auto due = clock_type::now() + timeout;
    std::lock_guard guard{deadlines_mtx};
    if (closed)
      return 0;
    std::size_t k = 0;
    while (k < fifos.size() && fifos[k].timeout != timeout)
      ++k;
    if (k == fifos.size())
      fifos.push_back(fifo{timeout, {}, 1});
    auto& f = fifos[k];
    auto seq = f.base + f.entries.size();
    f.entries.push_back(deadline{due, std::move(requester), rid});
    if (!tick_armed || due < tick_due)
      arm(registry, due);
    return (static_cast<std::uint64_t>(k) << seq_bits) | seq;
  }

  void done(std::uint64_t token) noexcept {
    if (token == 0)
      return;
    auto k = static_cast<std::size_t>(token >> seq_bits);
    auto seq = token & ((std::uint64_t{1} << seq_bits) - 1);
    std::lock_guard guard{deadlines_mtx};
    if (k >= fifos.size())
      return;
    auto& f = fifos[k];
    if (seq < f.base || seq >= f.base + f.entries.size())
      return; // expired already
    f.entries[seq - f.base].done = true;
    while (!f.entries.empty() && f.entries.front().done) {
      f.entries.pop_front();
      ++f.base;
    }
  }

  // The registry's tick: answers every overdue request with `sec::request_timeout` and
  // arms the next tick.
  void expire(const caf::actor& registry) {
    std::vector<std::pair<caf::actor_addr, caf::message_id>> overdue;
    {
      std::lock_guard guard{deadlines_mtx};
      auto now = clock_type::now();
      if (tick_armed && tick_due <= now)
        tick_armed = false;
      std::optional<clock_type::time_point> next;
      for (auto& f : fifos) {
        while (!f.entries.empty() && (f.entries.front().done || f.entries.front().due <= now)) {
          auto& d = f.entries.front();
          if (!d.done)
            overdue.emplace_back(std::move(d.requester), d.response_id);
          f.entries.pop_front();
          ++f.base;
        }
        if (!f.entries.empty() && (!next || f.entries.front().due < *next))
          next = f.entries.front().due;
      }
      if (next && (!tick_armed || *next < tick_due))
        arm(registry, *next);
    }
    for (auto& [who, rid] : overdue)
      time_out(who, rid);
  }

  static void time_out(const caf::actor_addr& who, caf::message_id rid) {
    if (auto ptr = caf::actor_cast<caf::strong_actor_ptr>(who))
      ptr->enqueue(nullptr, rid, caf::make_message(caf::make_error(caf::sec::request_timeout)),
                   nullptr);
  }

  // The registry ends: CAF's clock takes over the deadlines still pending.
  void close(caf::actor_system& sys) {
    std::lock_guard guard{deadlines_mtx};
    closed = true;
    for (auto& f : fifos) {
      for (auto& d : f.entries) {
        if (d.done)
          continue;
        auto ptr = caf::actor_cast<caf::strong_actor_ptr>(d.requester);
        if (!ptr)
          continue;
        sys.clock().schedule_message(
          d.due, ptr,
          caf::make_mailbox_element(nullptr, d.response_id, {},
                                    caf::make_error(caf::sec::request_timeout)));
      }
      f.base += f.entries.size();
      f.entries.clear();
    }
  }
};

void request_done(router& r, std::uint64_t token) noexcept {
  r.done(token);
}

} // namespace detail

namespace {

using detail::route;
using detail::route_key;
using detail::router;
using detail::waiting_list;

// An aggregate actor ended (sent by a functor attached to it, which costs no more than a
// monitor and spares the registry a map from actor to key). `key` points at its route's
// key, which the registry erases only after this message.
struct actor_gone {
  const route_key* key;
  caf::actor_addr actor;
};

} // namespace
} // namespace annals::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::actor_gone)

namespace annals::actors {
namespace {

struct registry_state {
  std::shared_ptr<host::shared> shared;
  std::shared_ptr<router> routes;
  std::shared_ptr<detail::counters> stats;
  std::size_t max_live = 0;
  std::size_t live = 0;   // actors not stopping
  std::size_t actors = 0; // actors spawned and not yet gone
  // With max_live only: the live keys (pointers to the routes' keys), most recently used
  // first, and where each one is in that list.
  std::list<const route_key*> lru;
  std::unordered_map<const route_key*, std::list<const route_key*>::iterator> lru_pos;
  // Commands for the successor of a stopping actor, by its route's key.
  std::unordered_map<const route_key*, waiting_list> waiting;
  bool draining = false;                                  // no new commands; stop every aggregate
  std::vector<caf::typed_response_promise<bool>> drained; // answered when none is left
};

using registry_actor = caf::stateful_actor<registry_state>;

// The persistence id's text, built in a reused buffer: a key that does not fit the
// small-string buffer would otherwise cost an allocation per command.
const std::string& key_of(const envelope& env) {
  thread_local std::string key;
  key.assign(env.type_name).append(1, persistence_id::separator).append(env.id);
  return key;
}

// Answers the drain requests once the last aggregate has ended.
void finish_drain_if_done(registry_actor* self) {
  if (!self->state.draining || self->state.actors > 0)
    return;
  for (auto& rp : self->state.drained)
    rp.deliver(true);
  self->state.drained.clear();
}

// The registry's LRU bookkeeping (with max_live only).
void track(registry_actor* self, const route_key& key) {
  if (self->state.max_live == 0)
    return;
  self->state.lru.push_front(&key);
  self->state.lru_pos[&key] = self->state.lru.begin();
}

void touch(registry_actor* self, const route_key& key) {
  if (self->state.max_live == 0)
    return;
  if (auto i = self->state.lru_pos.find(&key); i != self->state.lru_pos.end())
    self->state.lru.splice(self->state.lru.begin(), self->state.lru, i->second);
}

void untrack(registry_actor* self, const route_key& key) {
  if (self->state.max_live == 0)
    return;
  if (auto i = self->state.lru_pos.find(&key); i != self->state.lru_pos.end()) {
    self->state.lru.erase(i->second);
    self->state.lru_pos.erase(i);
  }
}

void request_stop(registry_actor* self, const route_key& key, route& e) {
  {
    std::lock_guard guard{self->state.routes->shard_of(key.view()).mtx};
    if (e.stopping || !e.actor)
      return;
    e.stopping = true;
  }
  --self->state.live;
  untrack(self, key);
  self->state.stats->passivations.fetch_add(1, std::memory_order_relaxed);
  self->send(e.actor, detail::stop_atom::value);
}

// Forgets a route that has no actor and nothing on its way (under the shard's lock).
void erase_if_unused(registry_actor* self, router::shard& sh, std::string_view key) {
  auto i = sh.routes.find(key);
  if (i != sh.routes.end() && !i->second.actor && i->second.via_registry == 0
      && self->state.waiting.count(&i->first) == 0)
    sh.routes.erase(i);
}

// Spawns the actor of `e` (which has none); the caller publishes it under the shard's lock.
caf::expected<caf::actor> spawn_for(registry_actor* self, const route_key& key,
                                    const envelope& env) {
  auto spawn = self->state.shared->spawner(env.type_name);
  if (!spawn)
    return std::move(spawn.error());
  auto max = self->state.max_live;
  // Make room first: the least recently used actor is passivated.
  while (max > 0 && self->state.live >= max && !self->state.lru.empty()) {
    const auto* victim = self->state.lru.back();
    auto& sh = self->state.routes->shard_of(victim->view());
    route* r;
    {
      std::lock_guard guard{sh.mtx};
      r = &sh.routes.find(victim->view())->second;
    }
    request_stop(self, *victim, *r);
  }
  auto actor = (*spawn)(self->system(), env.id, caf::actor_cast<caf::actor>(self), &key);
  actor->attach_functor([reg = caf::actor_cast<caf::weak_actor_ptr>(self), key = &key,
                         addr = actor.address()](const caf::error&) {
    if (auto r = caf::actor_cast<caf::actor>(reg))
      caf::anon_send(r, actor_gone{key, addr});
  });
  ++self->state.live;
  ++self->state.actors;
  return actor;
}

caf::behavior registry_behavior(registry_actor* self, std::shared_ptr<host::shared> shared,
                                std::shared_ptr<router> routes,
                                std::shared_ptr<detail::counters> stats, std::size_t max_live) {
  self->state.shared = std::move(shared);
  self->state.routes = std::move(routes);
  self->state.stats = std::move(stats);
  self->state.max_live = max_live;
  // The aggregates end with the registry (the host's destructor ends the registry).
  self->set_exit_handler([self](caf::exit_msg& msg) {
    for (auto& sh : self->state.routes->shards) {
      std::lock_guard guard{sh.mtx};
      for (auto& [key, e] : sh.routes)
        if (e.actor)
          self->send_exit(e.actor, msg.reason);
    }
    self->state.routes->close(self->system());
    self->quit(msg.reason);
  });
  return {
    [self](actor_gone& gone) {
      const route_key& key = *gone.key;
      --self->state.actors;
      auto& sh = self->state.routes->shard_of(key.view());
      std::unique_lock lock{sh.mtx};
      auto i = sh.routes.find(key.view());
      if (i == sh.routes.end() || i->second.actor.address() != gone.actor) {
        lock.unlock();
        return finish_drain_if_done(self);
      }
      auto& e = i->second;
      if (!e.stopping) {
        // Died on its own (e.g. recovery failed): forget it, the next command retries.
        --self->state.live;
        untrack(self, key);
      }
      e.actor = nullptr;
      e.stopping = false;
      std::optional<waiting_list> waiting;
      if (auto w = self->state.waiting.find(&key); w != self->state.waiting.end()) {
        waiting = std::move(w->second);
        self->state.waiting.erase(w);
      }
      if (!waiting || self->state.draining) {
        erase_if_unused(self, sh, key.view());
        lock.unlock();
        if (waiting)
          for (auto& [env, rp] : *waiting)
            rp.deliver(make_error(errc::unavailable, "the host is shutting down"));
        return finish_drain_if_done(self);
      }
      lock.unlock();
      // Commands that arrived while the old actor stopped go to its successor, which
      // recovers only now that the old one can no longer write.
      auto actor = spawn_for(self, key, waiting->front().first);
      if (!actor) {
        lock.lock();
        erase_if_unused(self, sh, key.view());
        lock.unlock();
        for (auto& [env, rp] : *waiting)
          rp.deliver(actor.error());
        return;
      }
      lock.lock();
      e.actor = *actor;
      track(self, key);
      // Under the lock: no command sent straight to the new actor overtakes these.
      for (auto& [env, rp] : *waiting)
        rp.delegate(e.actor, std::move(env));
    },
    [self](envelope& env) -> caf::result<reply_msg> {
      std::string_view key = key_of(env);
      auto& sh = self->state.routes->shard_of(key);
      std::unique_lock lock{sh.mtx};
      if (self->state.draining) {
        if (auto i = sh.routes.find(key); i != sh.routes.end() && env.counted)
          --i->second.via_registry;
        erase_if_unused(self, sh, key);
        return make_error(errc::unavailable, "the host is shutting down");
      }
      auto* i = &sh.get(key);
      auto& e = i->second;
      if (env.counted)
        --e.via_registry;
      if (e.stopping) {
        auto rp = self->make_response_promise<reply_msg>();
        self->state.waiting[&i->first].emplace_back(std::move(env), rp);
        return rp;
      }
      if (!e.actor) {
        lock.unlock();
        auto actor = spawn_for(self, i->first, env);
        lock.lock();
        if (!actor) {
          erase_if_unused(self, sh, i->first.view());
          return std::move(actor.error());
        }
        e.actor = std::move(*actor);
        track(self, i->first);
      } else {
        touch(self, i->first);
      }
      // Under the lock: a client's next command straight to the actor comes after this one.
      self->delegate(e.actor, std::move(env));
      return caf::delegated<reply_msg>{};
    },
    [self](detail::passivate_msg msg) {
      // The sender is alive or its `actor_gone` is still behind this message: its route and
      // key are there.
      const auto& key = *static_cast<const route_key*>(msg.route);
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto& sh = self->state.routes->shard_of(key.view());
      route* e = nullptr;
      {
        std::lock_guard guard{sh.mtx};
        auto i = sh.routes.find(key.view());
        if (i != sh.routes.end() && i->second.actor.address() == sender)
          e = &i->second;
      }
      if (e != nullptr)
        request_stop(self, key, *e);
    },
    [self](detail::deadline_atom) {
      self->state.routes->expire(caf::actor_cast<caf::actor>(self));
    },
    [self](detail::stats_atom) { return self->state.live; },
    [self](detail::drain_atom) -> caf::result<bool> {
      self->state.draining = true;
      std::vector<std::pair<const route_key*, route*>> all;
      for (auto& sh : self->state.routes->shards) {
        std::lock_guard guard{sh.mtx};
        for (auto& [key, e] : sh.routes)
          all.emplace_back(&key, &e);
      }
      for (auto& [key, e] : all)
        request_stop(self, *key, *e);
      if (self->state.actors == 0)
        return true;
      auto rp = self->make_response_promise<bool>();
      self->state.drained.push_back(rp);
      return rp;
    },
  };
}

} // namespace

host::host(caf::actor_system& sys, persistence::journal_ptr journal,
           persistence::snapshot_store_ptr snapshots, host_options opts)
  : sys_(&sys), journal_(std::move(journal)), snapshots_(std::move(snapshots)),
    warn_(opts.warn ? std::move(opts.warn)
                    : [](std::string_view msg) { std::cerr << "annals: " << msg << '\n'; }),
    stats_(std::make_shared<detail::counters>()), shared_(std::make_shared<shared>()),
    link_(std::make_shared<detail::host_link>()), router_(std::make_shared<detail::router>()) {
  router_->direct = opts.max_live == 0;
  link_->registry = sys.spawn(registry_behavior, shared_, router_, stats_, opts.max_live);
  if (auto* owner = dynamic_cast<actor_system*>(&sys))
    owner->attach(link_);
}

host::~host() {
  // After the system stopped the registry (it is being destroyed or gone), the system
  // must not be touched.
  if (!link_->system_gone)
    caf::anon_send_exit(link_->registry, caf::exit_reason::user_shutdown);
}

host::sent_command host::send_command(caf::event_based_actor* self, detail::envelope env,
                                      std::chrono::milliseconds timeout) {
  const auto& registry = link_->registry;
  caf::message_id rid;
  if (!router_->direct || !registry) {
    rid = self->request(registry, caf::infinite, std::move(env)).id();
  } else {
    std::string_view key = key_of(env);
    auto& sh = router_->shard_of(key);
    std::lock_guard guard{sh.mtx};
    auto& e = sh.get(key).second;
    if (e.actor && !e.stopping && e.via_registry == 0) {
      rid = self->request(e.actor, caf::infinite, std::move(env)).id();
    } else {
      ++e.via_registry;
      env.counted = true;
      rid = self->request(registry, caf::infinite, std::move(env)).id();
    }
  }
  if (!registry)
    return {rid, 0};
  return {rid, router_->add(registry, self->address(), rid, timeout)};
}

caf::error host::gone() {
  return make_error(errc::unavailable, "the host's actor system has stopped");
}

caf::error host::add_type(std::string name, const void* token, spawn_fn spawn) {
  if (name.empty() || name.find(persistence_id::separator) != std::string::npos || name.size() > 64)
    return make_error(errc::invalid_argument,
                      "aggregate type name '" + name + "' must be 1 to 64 characters without '|'");
  std::lock_guard guard{shared_->mtx};
  if (shared_->types.count(name) > 0)
    return make_error(errc::invalid_argument,
                      "aggregate type name '" + name + "' is registered twice");
  if (shared_->names.count(token) > 0)
    return make_error(errc::invalid_argument, "an aggregate type is registered twice, as '"
                                                + shared_->names[token] + "' and '" + name + "'");
  shared_->names.emplace(token, name);
  shared_->types.emplace(std::move(name), shared::type_entry{token, std::move(spawn)});
  return {};
}

caf::expected<std::string> host::name_of(const void* token) const {
  std::lock_guard guard{shared_->mtx};
  auto i = shared_->names.find(token);
  if (i == shared_->names.end())
    return make_error(errc::invalid_argument, "aggregate type not registered with this host");
  return i->second;
}

caf::error host::check_id(std::string_view id, std::string_view what) {
  auto refuse = [what](const std::string& why) {
    return make_error(errc::invalid_argument, std::string{what} + " " + why);
  };
  if (id.empty())
    return refuse("is empty");
  if (id.size() > 255)
    return refuse("is " + std::to_string(id.size()) + " bytes, at most 255");
  for (unsigned char c : id)
    if (c < 0x20 || c == 0x7f)
      return refuse("holds a control character");
  if (auto at = utf8_invalid_at(id); at != id.size())
    return refuse("is not valid UTF-8 (byte " + std::to_string(at) + ")");
  return {};
}

host_metrics host::metrics() const {
  auto get = [](const std::atomic<std::uint64_t>& x) { return x.load(std::memory_order_relaxed); };
  return {
    get(stats_->commands_handled), get(stats_->commands_failed), get(stats_->events_persisted),
    get(stats_->recoveries),       get(stats_->events_replayed), get(stats_->snapshots_written),
    get(stats_->passivations),     get(stats_->duplicates),      get(stats_->commands_pipelined)};
}

caf::error host::drain(std::chrono::milliseconds timeout) {
  if (link_->system_gone)
    return gone();
  caf::scoped_actor self{*sys_};
  caf::error result;
  self->request(link_->registry, caf::duration{timeout}, detail::drain_atom::value)
    .receive([](bool) {}, [&](caf::error& err) { result = std::move(err); });
  return result;
}

caf::expected<std::size_t> host::live_count(std::chrono::milliseconds timeout) const {
  if (link_->system_gone)
    return gone();
  caf::scoped_actor self{*sys_};
  caf::expected<std::size_t> result{std::size_t{0}};
  self->request(link_->registry, caf::duration{timeout}, detail::stats_atom::value)
    .receive([&](std::size_t n) { result = n; }, [&](caf::error& err) { result = std::move(err); });
  return result;
}

} // namespace annals::actors
