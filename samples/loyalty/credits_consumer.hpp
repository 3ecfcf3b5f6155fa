#pragma once

// The loyalty service's side of the bank's public messages: a durable JetStream pull
// consumer on `bank.public.payments.AccountCredited` that turns each credit into
// `loyalty::earn` for the member with the account's id.
//
// Exactly-once effect from at-least-once delivery: a message is acknowledged only after the
// member's reply came back, and `earn` carries the message id as its idempotency key. A
// message handled but not acknowledged (the process died in between) is delivered again
// after the consumer's ack wait, and the member answers it from its de-duplication window
// without persisting anything; so does a second copy of the same message id in the stream.
// Messages that are not a valid credit are logged with the reason and terminated (never
// redelivered); a command that fails for a transient reason (timeout, journal) is
// negatively acknowledged and retried.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/expected.hpp>

#include "annals/actors/host.hpp"

namespace loyalty {

struct consumer_options {
  /// NATS server URL(s), comma-separated.
  std::string servers = "nats://127.0.0.1:4222";
  /// The stream the bank publishes to; created (subjects `bank.public.>`, file storage,
  /// one replica) when missing.
  std::string stream = "bank_public";
  /// The consumer's durable name: its position survives restarts of this process.
  std::string durable = "loyalty";
  std::string subject = "bank.public.payments.AccountCredited";
  /// How long the server waits for an ack before delivering a message again; applied when
  /// the consumer is created.
  std::chrono::milliseconds ack_wait{30'000};
  /// How long `open` tries to reach the server and set up the stream and the consumer.
  std::chrono::milliseconds setup_bound{10'000};
  /// Fault injection for tests: exit the process (code 3, no clean-up) after handling the
  /// n-th message and before acknowledging it. 0: never.
  std::uint64_t crash_before_ack = 0;
};

/// Counters for /health.
struct consumer_counts {
  std::uint64_t handled = 0;  ///< credits whose command was answered and acked
  std::uint64_t rejected = 0; ///< messages terminated as malformed or refused
  std::uint64_t retried = 0;  ///< messages negatively acknowledged after a transient error
};

class credits_consumer {
public:
  /// Connects, makes sure the stream and the durable consumer exist, and binds to it.
  static caf::expected<std::unique_ptr<credits_consumer>> open(annals::actors::host& members,
                                                               consumer_options opts);

  ~credits_consumer();
  credits_consumer(const credits_consumer&) = delete;
  credits_consumer& operator=(const credits_consumer&) = delete;

  /// Fetches and handles messages until `stop()`; returns after the message in hand is
  /// handled and acknowledged.
  void run();

  /// Makes `run` return soon (within one fetch timeout). Any thread.
  void stop() noexcept {
    stopping_.store(true);
  }

  consumer_counts counts() const noexcept {
    return {handled_.load(), rejected_.load(), retried_.load()};
  }

private:
  struct nats_handles;

  credits_consumer(annals::actors::host& members, consumer_options opts);

  annals::actors::host& members_;
  consumer_options opts_;
  std::unique_ptr<nats_handles> nats_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> handled_{0};
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> retried_{0};
};

} // namespace loyalty
