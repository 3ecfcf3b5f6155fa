#pragma once

// Parsing JetStream API replies the writer receives on its own inbox: publish
// acknowledgements and `last_by_subj` message gets.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "jetstream/envelope.hpp"

namespace annals::persistence::jetstream {

/// A publish acknowledgement or a JetStream API error.
struct api_reply {
  std::uint64_t seq = 0;     ///< stream sequence (publish ack, message get)
  std::int64_t err_code = 0; ///< JetStream error code, 0 if none
  std::string description;   ///< the error's text
  std::string data;          ///< message get: the message body, base64-decoded
  std::string headers;       ///< message get: the header block, base64-decoded
};

/// Parses `body`; nothing if it is not a JSON object of either shape.
std::optional<api_reply> parse_api_reply(std::string_view body);

/// The value of header `name` in a NATS header block ("NATS/1.0\r\nName: value\r\n...").
std::string header_value(std::string_view block, std::string_view name);

/// The JSON request of a last-message-by-subject get.
std::string last_by_subject_request(std::string_view subject);

} // namespace annals::persistence::jetstream
