#include "jetstream/api.hpp"

#include <boost/json.hpp>

namespace annals::persistence::jetstream {

namespace {

std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    if (c == '+')
      return 62;
    if (c == '/')
      return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=')
      break;
    auto v = value(c);
    if (v < 0)
      return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

} // namespace

std::optional<api_reply> parse_api_reply(std::string_view body) {
  boost::json::error_code ec;
  auto v = boost::json::parse(body, ec);
  auto* obj = ec ? nullptr : v.if_object();
  if (obj == nullptr)
    return std::nullopt;
  api_reply out;
  if (auto* err = obj->if_contains("error"); err != nullptr && err->is_object()) {
    const auto& e = err->as_object();
    if (auto* code = e.if_contains("err_code"); code != nullptr && code->is_int64())
      out.err_code = code->as_int64();
    if (auto* desc = e.if_contains("description"); desc != nullptr && desc->is_string())
      out.description = desc->as_string();
    if (out.err_code == 0)
      out.err_code = -1; // an error without a code is still an error
    return out;
  }
  const auto* src = obj;
  if (auto* msg = obj->if_contains("message"); msg != nullptr && msg->is_object()) {
    src = &msg->as_object();
    for (auto [key, field] : {std::pair{"data", &out.data}, std::pair{"hdrs", &out.headers}}) {
      if (auto* x = src->if_contains(key); x != nullptr && x->is_string()) {
        auto decoded = base64_decode(x->as_string());
        if (!decoded)
          return std::nullopt;
        *field = std::move(*decoded);
      }
    }
  }
  if (auto* seq = src->if_contains("seq"); seq != nullptr && seq->is_int64() && seq->as_int64() > 0)
    out.seq = static_cast<std::uint64_t>(seq->as_int64());
  else
    return std::nullopt;
  return out;
}

std::string header_value(std::string_view block, std::string_view name) {
  std::size_t pos = 0;
  while (pos < block.size()) {
    auto end = block.find("\r\n", pos);
    auto line = block.substr(pos, end == std::string_view::npos ? block.size() - pos : end - pos);
    pos = end == std::string_view::npos ? block.size() : end + 2;
    auto colon = line.find(':');
    if (colon == std::string_view::npos || line.substr(0, colon) != name)
      continue;
    auto value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ')
      value.remove_prefix(1);
    return std::string{value};
  }
  return {};
}

std::string last_by_subject_request(std::string_view subject) {
  boost::json::object req;
  req["last_by_subj"] = subject;
  return boost::json::serialize(req);
}

} // namespace annals::persistence::jetstream
