#include "annals/actors/host.hpp"

#include "annals/actors/system.hpp"
#include "annals/utf8.hpp"

#include <chrono>
#include <deque>
#include <iostream>
#include <list>
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

// One live (or stopping) aggregate actor.
struct live_entry {
  caf::actor actor;
  bool stopping = false;
  std::vector<std::pair<envelope, caf::typed_response_promise<reply_msg>>> waiting;
  std::list<const std::string*>::iterator lru;
};

struct registry_state {
  std::shared_ptr<host::shared> shared;
  std::shared_ptr<detail::counters> stats;
  std::size_t max_live = 0;
  std::size_t live = 0; // entries not stopping
  std::unordered_map<std::string, live_entry> entries;
  // Both point at the keys of `entries` (stable in a node-based map): one copy per key.
  std::unordered_map<caf::actor_addr, const std::string*> keys;
  std::list<const std::string*> lru;                      // front: most recently used
  bool draining = false;                                  // no new commands; stop every aggregate
  std::vector<caf::typed_response_promise<bool>> drained; // answered when none is left
};

using registry_actor = caf::stateful_actor<registry_state>;

// Answers the drain requests once the last aggregate has ended.
void finish_drain_if_done(registry_actor* self) {
  if (!self->state.draining || !self->state.entries.empty())
    return;
  for (auto& rp : self->state.drained)
    rp.deliver(true);
  self->state.drained.clear();
}

void request_stop(registry_actor* self, live_entry& e) {
  if (e.stopping)
    return;
  e.stopping = true;
  --self->state.live;
  self->state.lru.erase(e.lru);
  self->state.stats->passivations.fetch_add(1, std::memory_order_relaxed);
  self->send(e.actor, detail::stop_atom::value);
}

caf::error spawn_into(registry_actor* self, const std::string& key, const envelope& env,
                      live_entry& e) {
  auto spawn = self->state.shared->spawner(env.type_name);
  if (!spawn)
    return std::move(spawn.error());
  auto max = self->state.max_live;
  // Make room first: the least recently used actor is passivated.
  while (max > 0 && self->state.live >= max && !self->state.lru.empty()) {
    request_stop(self, self->state.entries.at(*self->state.lru.back()));
  }
  e.actor = (*spawn)(self->system(), env.id, caf::actor_cast<caf::actor>(self));
  e.stopping = false;
  self->monitor(e.actor);
  self->state.keys[e.actor.address()] = &key;
  self->state.lru.push_front(&key);
  e.lru = self->state.lru.begin();
  ++self->state.live;
  return {};
}

caf::behavior registry_behavior(registry_actor* self, std::shared_ptr<host::shared> shared,
                                std::shared_ptr<detail::counters> stats, std::size_t max_live) {
  self->state.shared = std::move(shared);
  self->state.stats = std::move(stats);
  self->state.max_live = max_live;
  // The aggregates end with the registry (the host's destructor ends the registry).
  self->set_exit_handler([self](caf::exit_msg& msg) {
    for (auto& [key, e] : self->state.entries)
      self->send_exit(e.actor, msg.reason);
    self->quit(msg.reason);
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto k = self->state.keys.find(dm.source);
    if (k == self->state.keys.end())
      return;
    auto key = *k->second;
    self->state.keys.erase(k);
    auto i = self->state.entries.find(key);
    if (i == self->state.entries.end() || i->second.actor.address() != dm.source)
      return;
    auto& e = i->second;
    if (!e.stopping) {
      // Died on its own (e.g. recovery failed): forget it, the next command retries.
      --self->state.live;
      self->state.lru.erase(e.lru);
    }
    if (e.waiting.empty() || self->state.draining) {
      for (auto& [env, rp] : e.waiting)
        rp.deliver(make_error(errc::unavailable, "the host is shutting down"));
      self->state.entries.erase(i);
      finish_drain_if_done(self);
      return;
    }
    // Commands that arrived while the old actor stopped go to its successor, which
    // recovers only now that the old one can no longer write.
    auto waiting = std::move(e.waiting);
    e.waiting.clear();
    if (auto err = spawn_into(self, i->first, waiting.front().first, e)) {
      for (auto& [env, rp] : waiting)
        rp.deliver(err);
      self->state.entries.erase(key);
      return;
    }
    for (auto& [env, rp] : waiting)
      rp.delegate(e.actor, std::move(env));
  });
  return {
    [self](envelope& env) -> caf::result<reply_msg> {
      // The persistence id's text, built in a reused buffer: a key that does not fit the
      // small-string buffer would otherwise cost an allocation per command.
      if (self->state.draining)
        return make_error(errc::unavailable, "the host is shutting down");
      thread_local std::string key;
      key.assign(env.type_name).append(1, persistence_id::separator).append(env.id);
      auto i = self->state.entries.find(key);
      if (i == self->state.entries.end()) {
        i = self->state.entries.emplace(key, live_entry{}).first;
        if (auto err = spawn_into(self, i->first, env, i->second)) {
          self->state.entries.erase(i);
          return err;
        }
      } else if (i->second.stopping) {
        auto rp = self->make_response_promise<reply_msg>();
        i->second.waiting.emplace_back(std::move(env), rp);
        return rp;
      } else {
        self->state.lru.splice(self->state.lru.begin(), self->state.lru, i->second.lru);
      }
      self->delegate(i->second.actor, std::move(env));
      return caf::delegated<reply_msg>{};
    },
    [self](detail::passivate_atom) {
      auto k = self->state.keys.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (k == self->state.keys.end())
        return;
      auto i = self->state.entries.find(*k->second);
      if (i != self->state.entries.end() && i->second.actor.address() == k->first)
        request_stop(self, i->second);
    },
    [self](detail::stats_atom) { return self->state.live; },
    [self](detail::drain_atom) -> caf::result<bool> {
      self->state.draining = true;
      for (auto& [key, e] : self->state.entries)
        request_stop(self, e);
      if (self->state.entries.empty())
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
    link_(std::make_shared<detail::host_link>()) {
  link_->registry = sys.spawn(registry_behavior, shared_, stats_, opts.max_live);
  if (auto* owner = dynamic_cast<actor_system*>(&sys))
    owner->attach(link_);
}

host::~host() {
  // After the system stopped the registry (it is being destroyed or gone), the system
  // must not be touched.
  if (!link_->system_gone)
    caf::anon_send_exit(link_->registry, caf::exit_reason::user_shutdown);
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
