#include "loyalty/credits_consumer.hpp"

#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <thread>
#include <utility>

#include <nats/nats.h>

#include "annals/actors/public_events.hpp"
#include "annals/error.hpp"
#include "annals/persistence/journal.hpp"
#include "loyalty/member.hpp"

namespace loyalty {

namespace {

constexpr int fetch_batch = 64;
constexpr std::int64_t fetch_timeout_ms = 500;

caf::error nats_error(const std::string& what, natsStatus s,
                      jsErrCode code = static_cast<jsErrCode>(0)) {
  std::string text = what + ": " + natsStatus_GetText(s);
  if (code != 0)
    text += " (JetStream error " + std::to_string(static_cast<int>(code)) + ")";
  return annals::make_error(annals::persistence::journal_errc::unavailable, std::move(text));
}

std::int64_t to_ns(std::chrono::milliseconds d) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

/// The credit a message carries: the member id and the cents, or why it is not one.
struct credit {
  std::string account;
  std::int64_t cents = 0;
  std::string message_id;
};

caf::expected<credit> read_credit(std::string_view body) {
  auto msg = annals::actors::parse_published(body);
  if (!msg)
    return std::move(msg.error());
  auto bad = [&](const std::string& what) {
    return annals::make_error(annals::errc::decode_failed, "message " + msg->id + ": " + what);
  };
  if (msg->type != "payments.AccountCredited")
    return bad("type '" + msg->type + "', expected payments.AccountCredited");
  if (msg->version != 1)
    return bad("version " + std::to_string(msg->version) + " of payments.AccountCredited, "
               + "this consumer reads version 1");
  auto* account = msg->data.if_contains("account");
  if (!account || !account->is_string() || account->as_string().empty())
    return bad("data.account missing or not a non-empty string");
  auto* amount = msg->data.if_contains("amount");
  if (!amount || !amount->is_int64() || amount->as_int64() <= 0)
    return bad("data.amount missing or not a positive whole number of cents");
  if (auto err = annals::actors::host::check_id(msg->id, "message id"))
    return err;
  if (auto err = annals::actors::host::check_id(account->as_string(), "account id"))
    return err;
  return credit{std::string{account->as_string()}, amount->as_int64(), msg->id};
}

} // namespace

struct credits_consumer::nats_handles {
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  natsSubscription* sub = nullptr;

  ~nats_handles() {
    if (sub)
      natsSubscription_Destroy(sub); // keeps the durable consumer (libnats >= 3.4)
    if (js)
      jsCtx_Destroy(js);
    if (conn) {
      natsConnection_Close(conn);
      natsConnection_Destroy(conn);
    }
  }
};

credits_consumer::credits_consumer(annals::actors::host& members, consumer_options opts)
  : members_(members), opts_(std::move(opts)), nats_(std::make_unique<nats_handles>()) {}

credits_consumer::~credits_consumer() = default;

caf::expected<std::unique_ptr<credits_consumer>>
credits_consumer::open(annals::actors::host& members, consumer_options opts) {
  std::unique_ptr<credits_consumer> self{new credits_consumer{members, std::move(opts)}};
  auto& o = self->opts_;
  auto& n = *self->nats_;
  auto deadline = std::chrono::steady_clock::now() + o.setup_bound;

  natsOptions* nopts = nullptr;
  if (auto s = natsOptions_Create(&nopts); s != NATS_OK)
    return nats_error("nats options", s);
  natsOptions_SetServers(nopts, nullptr, 0);
  natsOptions_SetURL(nopts, o.servers.c_str());
  natsOptions_SetMaxReconnect(nopts, -1); // ride out a server restart
  natsOptions_SetReconnectWait(nopts, 100);
  natsOptions_SetTimeout(nopts, 2000);
  natsStatus s = NATS_OK;
  while ((s = natsConnection_Connect(&n.conn, nopts)) != NATS_OK
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds{100}); // the server is starting
  natsOptions_Destroy(nopts);
  if (s != NATS_OK)
    return nats_error("connecting to " + o.servers, s);
  if (s = natsConnection_JetStream(&n.js, n.conn, nullptr); s != NATS_OK)
    return nats_error("JetStream context", s);

  // The stream: the bank's publisher creates it with the same configuration; whoever comes
  // first does, the other finds it.
  for (;;) {
    jsStreamInfo* si = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    s = js_GetStreamInfo(&si, n.js, o.stream.c_str(), nullptr, &code);
    if (s == NATS_OK) {
      jsStreamInfo_Destroy(si);
      break;
    }
    if (s == NATS_NOT_FOUND || code == JSStreamNotFoundErr) {
      const char* subjects[] = {"bank.public.>"};
      jsStreamConfig cfg;
      jsStreamConfig_Init(&cfg);
      cfg.Name = o.stream.c_str();
      cfg.Subjects = subjects;
      cfg.SubjectsLen = 1;
      cfg.Storage = js_FileStorage;
      s = js_AddStream(&si, n.js, &cfg, nullptr, &code);
      if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        break;
      }
      if (code != JSStreamNameExistErr && std::chrono::steady_clock::now() >= deadline)
        return nats_error("creating stream " + o.stream, s, code);
      continue; // created meanwhile by the publisher: read it again
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return nats_error("reading stream " + o.stream, s, code);
    std::this_thread::sleep_for(std::chrono::milliseconds{100}); // JetStream not ready yet
  }

  // The durable consumer: created once; later starts bind to it and resume where its acks
  // left off.
  jsConsumerInfo* ci = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  s = js_GetConsumerInfo(&ci, n.js, o.stream.c_str(), o.durable.c_str(), nullptr, &code);
  if (s == NATS_NOT_FOUND || code == JSConsumerNotFoundErr) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = o.durable.c_str();
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.FilterSubject = o.subject.c_str();
    cc.AckWait = to_ns(o.ack_wait);
    s = js_AddConsumer(&ci, n.js, o.stream.c_str(), &cc, nullptr, &code);
  }
  if (s != NATS_OK)
    return nats_error("consumer " + o.durable + " on " + o.stream, s, code);
  jsConsumerInfo_Destroy(ci);

  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = o.stream.c_str();
  so.Consumer = o.durable.c_str();
  so.ManualAck = true;
  s = js_PullSubscribe(&n.sub, n.js, o.subject.c_str(), o.durable.c_str(), nullptr, &so, &code);
  if (s != NATS_OK)
    return nats_error("binding to consumer " + o.durable, s, code);
  return self;
}

void credits_consumer::run() {
  std::uint64_t seen = 0;
  while (!stopping_.load()) {
    natsMsgList list{};
    jsErrCode code = static_cast<jsErrCode>(0);
    auto s = natsSubscription_Fetch(&list, nats_->sub, fetch_batch, fetch_timeout_ms, &code);
    if (s == NATS_TIMEOUT)
      continue;
    if (s != NATS_OK) {
      std::fprintf(stderr, "annals-loyalty: fetch failed: %s (JetStream error %d)\n",
                   natsStatus_GetText(s), static_cast<int>(code));
      std::this_thread::sleep_for(std::chrono::milliseconds{200}); // server away: retry
      continue;
    }
    // Handled one by one, in stream order: one member's credits keep their order.
    for (int i = 0; i < list.Count; ++i) {
      natsMsg* msg = list.Msgs[i];
      std::string_view body{natsMsg_GetData(msg),
                            static_cast<std::size_t>(natsMsg_GetDataLength(msg))};
      auto c = read_credit(body);
      if (!c) {
        std::fprintf(stderr, "annals-loyalty: skipping message %llu on %s: %s\n",
                     static_cast<unsigned long long>(natsMsg_GetSequence(msg)),
                     natsMsg_GetSubject(msg), annals::render(c.error()).c_str());
        natsMsg_Term(msg, nullptr);
        rejected_.fetch_add(1);
        continue;
      }
      auto r = members_.ask<member>(c->account, earn{points_for_credit(c->cents), c->message_id},
                                    {.idempotency_key = c->message_id});
      if (opts_.crash_before_ack != 0 && ++seen == opts_.crash_before_ack) {
        std::fprintf(stderr, "annals-loyalty: exiting before the ack of %s (fault injection)\n",
                     c->message_id.c_str());
        std::_Exit(3);
      }
      if (!r && annals::category_name(r.error()) != "loyalty") {
        std::fprintf(stderr, "annals-loyalty: %s for %s failed, delivering it again: %s\n",
                     c->message_id.c_str(), c->account.c_str(), annals::render(r.error()).c_str());
        natsMsg_Nak(msg, nullptr);
        retried_.fetch_add(1);
        continue;
      }
      if (!r) {
        std::fprintf(stderr, "annals-loyalty: member %s refused %s: %s\n", c->account.c_str(),
                     c->message_id.c_str(), annals::render(r.error()).c_str());
        natsMsg_Term(msg, nullptr);
        rejected_.fetch_add(1);
        continue;
      }
      // The ack is confirmed, so `handled` counts what the server will not deliver again.
      if (auto a = natsMsg_AckSync(msg, nullptr, &code); a != NATS_OK)
        std::fprintf(stderr, "annals-loyalty: ack of %s failed (it will come again): %s\n",
                     c->message_id.c_str(), natsStatus_GetText(a));
      else
        handled_.fetch_add(1);
    }
    natsMsgList_Destroy(&list);
  }
}

} // namespace loyalty
