// The append pipeline: one writer thread owns the per-id heads and every publish. Appends
// to different ids are in flight together; appends to one id go one at a time, because
// each needs the stream sequence its predecessor got.

#include <boost/json.hpp>

#include "internal/validate.hpp"
#include "jetstream/api.hpp"
#include "jetstream/state.hpp"

namespace annals::persistence {

using namespace jetstream;

namespace {

constexpr auto retry_pause = std::chrono::milliseconds{100};

std::int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

} // namespace

void jetstream_journal::append(append_request req, callback<append_result> done) {
  if (auto err = internal::validate(req, impl_->opts.max_append_bytes)) {
    done(std::move(err));
    return;
  }
  if (req.events.size() >= offsets_per_append) {
    done(make_error(journal_errc::too_large,
                    "append of " + std::to_string(req.events.size()) + " events to persistence id "
                      + req.persistence_id
                      + ": a JetStream append holds fewer than 1000000; nothing was written"));
    return;
  }
  {
    std::lock_guard guard{impl_->wmtx};
    if (!impl_->stopping) {
      pending_append p;
      p.req = std::move(req);
      p.done = std::move(done);
      p.give_up = clock::now() + impl_->opts.append_timeout;
      impl_->submitted.push_back(std::move(p));
      impl_->wcv.notify_one();
      return;
    }
  }
  done(make_error(journal_errc::closed,
                  "the JetStream journal on stream " + impl_->opts.stream + " was closed"));
}

void jetstream_journal::impl::run_writer() {
  std::unique_lock lk{wmtx};
  auto last_check = clock::now();
  for (;;) {
    bool idle = in_flight.empty() && waiting == 0;
    if (stopping && submitted.empty() && replies.empty() && idle)
      break;
    wcv.wait_for(lk, std::chrono::milliseconds{20},
                 [&] { return !submitted.empty() || !replies.empty() || stopping; });
    auto fresh = std::move(submitted);
    submitted.clear();
    auto answers = std::move(replies);
    replies.clear();
    lk.unlock();
    for (auto& p : fresh) {
      auto id = p.req.persistence_id;
      auto& q = ids[id];
      q.waiting.push_back(std::move(p));
      ++waiting;
      if (q.waiting.size() == 1)
        start_front(id);
    }
    for (auto& r : answers)
      on_reply(r);
    if (auto now = clock::now(); now - last_check >= std::chrono::milliseconds{20}) {
      last_check = now;
      check_timeouts();
    }
    lk.lock();
  }
}

void jetstream_journal::impl::finish_front(const std::string& persistence_id,
                                           caf::expected<append_result> res) {
  auto& q = ids[persistence_id];
  auto p = std::move(q.waiting.front());
  q.waiting.pop_front();
  --waiting;
  // After a failure the write may or may not be stored: the next append looks again.
  if (!res
      && (is(res.error(), journal_errc::unavailable)
          || is(res.error(), journal_errc::storage_error)))
    q.known = false;
  p.done(std::move(res));
}

void jetstream_journal::impl::start_front(const std::string& persistence_id) {
  for (;;) {
    auto& q = ids[persistence_id];
    if (q.waiting.empty()) {
      if (!q.known)
        ids.erase(persistence_id);
      return;
    }
    auto& p = q.waiting.front();
    // The cached head can be stale (another process appended): look again before refusing.
    if (!q.known || (p.req.expected_seq != q.head.seq && !p.fresh_head)) {
      send_lookup(p);
      return;
    }
    if (!p.msg_id.empty() && q.head.msg_id == p.msg_id) {
      complete_stored(persistence_id, q.head.stream_seq); // an earlier attempt landed
      return;
    }
    if (p.req.expected_seq != q.head.seq) {
      finish_front(persistence_id,
                   make_error(journal_errc::conflict,
                              "append to persistence id " + persistence_id + " expected seq "
                                + std::to_string(p.req.expected_seq) + " but the stream is at "
                                + std::to_string(q.head.seq)));
      continue;
    }
    envelope env;
    env.first_seq = q.head.seq + 1;
    env.timestamp_us = now_us();
    env.persistence_id = persistence_id;
    env.metadata = p.req.metadata;
    env.events = p.req.events;
    env.hash = chain(q.head.hash, env);
    p.body = encode(env);
    p.timestamp_us = env.timestamp_us;
    p.expected_stream_seq = q.head.stream_seq;
    auto max_payload = natsConnection_GetMaxPayload(nc);
    // Subject, reply and headers travel beside the body; keep a margin for them.
    if (max_payload > 0 && p.body.size() + 1024 > static_cast<std::size_t>(max_payload)) {
      finish_front(persistence_id,
                   make_error(journal_errc::too_large,
                              "append of " + std::to_string(p.req.events.size())
                                + " event(s) to persistence id " + persistence_id + " is "
                                + std::to_string(p.body.size())
                                + " bytes as a JetStream message, over the server's max_payload "
                                  "of "
                                + std::to_string(max_payload) + "; nothing was written"));
      continue;
    }
    p.msg_id = msg_id_prefix + std::to_string(next_token++);
    p.token = p.msg_id;
    publish(p);
    return;
  }
}

void jetstream_journal::impl::send_lookup(pending_append& p) {
  const auto& id = p.req.persistence_id;
  p.lookup = true;
  p.fresh_head = false;
  p.token = "L" + std::to_string(next_token++);
  in_flight[p.token] = id;
  auto subject = "$JS.API.STREAM.MSG.GET." + opts.stream;
  auto reply_to = inbox + "." + p.token;
  auto body = last_by_subject_request(names.events(id));
  auto s = natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED ? natsConnection_PublishRequest(
             nc, subject.c_str(), reply_to.c_str(), body.data(), static_cast<int>(body.size()))
                                                                   : NATS_CONNECTION_DISCONNECTED;
  p.retry_at = clock::now() + (s == NATS_OK ? opts.request_timeout : retry_pause);
}

void jetstream_journal::impl::publish(pending_append& p) {
  const auto& id = p.req.persistence_id;
  p.lookup = false;
  in_flight[p.token] = id;
  auto subject = names.events(id);
  auto reply_to = inbox + "." + p.token;
  natsMsg* raw = nullptr;
  auto s = natsMsg_Create(&raw, subject.c_str(), reply_to.c_str(), p.body.data(),
                          static_cast<int>(p.body.size()));
  msg_ptr m{raw};
  auto expected = std::to_string(p.expected_stream_seq);
  if (s == NATS_OK)
    s = natsMsgHeader_Set(m.get(), "Nats-Msg-Id", p.msg_id.c_str());
  if (s == NATS_OK)
    s = natsMsgHeader_Set(m.get(), "Nats-Expected-Last-Subject-Sequence", expected.c_str());
  if (s == NATS_OK)
    s = natsMsgHeader_Set(m.get(), "Nats-Expected-Stream", opts.stream.c_str());
  if (s == NATS_OK && natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED)
    s = NATS_CONNECTION_DISCONNECTED; // try again when connected; nothing queued meanwhile
  if (s == NATS_OK)
    s = natsConnection_PublishMsg(nc, m.get());
  // A publish the client could not even send (disconnected) is tried again shortly.
  p.retry_at = clock::now() + (s == NATS_OK ? opts.request_timeout : retry_pause);
}

void jetstream_journal::impl::on_reply(reply& r) {
  auto i = in_flight.find(r.token);
  if (i == in_flight.end())
    return; // a late answer to an attempt already settled
  auto id = i->second;
  auto& q = ids[id];
  auto& p = q.waiting.front();
  if (natsMsg_IsNoResponders(r.msg.get())) {
    // No stream leader (yet): try again shortly, within the append's time budget.
    p.retry_at = std::min(p.retry_at, clock::now() + retry_pause);
    return;
  }
  in_flight.erase(i);
  auto body = std::string_view{natsMsg_GetData(r.msg.get()),
                               static_cast<std::size_t>(natsMsg_GetDataLength(r.msg.get()))};
  auto ans = parse_api_reply(body);
  if (!ans) {
    finish_front(id, make_error(journal_errc::storage_error,
                                "append to persistence id " + id
                                  + ": JetStream answered with something that is neither an "
                                    "acknowledgement nor an error: "
                                  + std::string{body.substr(0, 200)}));
    start_front(id);
    return;
  }
  if (p.lookup) {
    on_lookup(id, *ans);
    return;
  }
  if (ans->err_code == JSStreamWrongLastSequenceErr) {
    // Our cached head was stale, or the caller's expected seq is, or an earlier attempt
    // of this very publish was stored and its acknowledgement lost: a clustered stream
    // checks the expected sequence before the message id, so the retry is refused
    // instead of acknowledged as a duplicate. The id's last message tells which.
    q.known = false;
    start_front(id);
    return;
  }
  if (ans->err_code != 0) {
    auto kind = ans->err_code == JSStreamMessageExceedsMaximumErr ? journal_errc::too_large
                                                                  : journal_errc::storage_error;
    finish_front(id,
                 make_error(kind, "append to persistence id " + id + " refused by JetStream ("
                                    + std::to_string(ans->err_code) + "): " + ans->description));
    start_front(id);
    return;
  }
  complete_stored(id, ans->seq);
}

void jetstream_journal::impl::on_lookup(const std::string& id, api_reply& ans) {
  auto& q = ids[id];
  auto& p = q.waiting.front();
  p.lookup = false;
  if (ans.err_code == JSNoMessageFoundErr) {
    q.known = true;
    q.head = id_head{};
  } else if (ans.err_code != 0) {
    finish_front(id, make_error(journal_errc::storage_error,
                                "reading the last append of persistence id " + id + " ("
                                  + std::to_string(ans.err_code) + "): " + ans.description));
    start_front(id);
    return;
  } else {
    auto env = decode_envelope(ans.data, "stream sequence " + std::to_string(ans.seq));
    if (!env) {
      finish_front(id, std::move(env.error()));
      start_front(id);
      return;
    }
    q.known = true;
    q.head = id_head{env->last_seq(), ans.seq, env->hash, header_value(ans.headers, "Nats-Msg-Id")};
  }
  p.fresh_head = true;
  start_front(id);
}

void jetstream_journal::impl::complete_stored(const std::string& id, std::uint64_t stream_seq) {
  auto& q = ids[id];
  auto& p = q.waiting.front();
  append_result res;
  res.first_seq = p.req.expected_seq + 1;
  res.last_seq = p.req.expected_seq + p.req.events.size();
  res.first_offset = stream_seq * offsets_per_append;
  res.last_offset = res.first_offset + p.req.events.size() - 1;
  res.timestamp_us = p.timestamp_us;
  // The body's last 32 bytes are the chain value after this append.
  event_hash h{};
  std::copy(p.body.end() - static_cast<std::ptrdiff_t>(h.size()), p.body.end(), h.begin());
  q.known = true;
  q.head = id_head{res.last_seq, stream_seq, h, p.msg_id};
  finish_front(id, res);
  start_front(id);
}

void jetstream_journal::impl::check_timeouts() {
  auto now = clock::now();
  std::vector<std::pair<std::string, std::string>> due;
  for (const auto& [token, id] : in_flight) {
    auto& p = ids[id].waiting.front();
    if (now >= p.retry_at)
      due.emplace_back(token, id);
  }
  for (auto& [token, id] : due) {
    auto& p = ids[id].waiting.front();
    if (now >= p.give_up) {
      in_flight.erase(token);
      finish_front(id,
                   make_error(journal_errc::unavailable,
                              "no " + std::string{p.lookup ? "answer" : "acknowledgement"}
                                + " from JetStream (stream " + opts.stream + " at " + opts.servers
                                + ") for the append to persistence id " + id + " within "
                                + std::to_string(opts.append_timeout.count())
                                + " ms: servers down or no stream leader; it may or may not be "
                                  "stored, so read the stream's highest seq before writing again"));
      start_front(id);
      continue;
    }
    // The same token and, for a publish, the same message id: the server drops the copy
    // if the first one landed.
    if (p.lookup) {
      in_flight.erase(token);
      send_lookup(p);
    } else {
      publish(p);
    }
  }
}

} // namespace annals::persistence
