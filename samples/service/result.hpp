#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace service::http {

/// Either a value or an error message. Operations that can fail for reasons outside the
/// caller's control (binding a port, talking to a peer) return one instead of throwing.
template <class T>
class result {
public:
  /// A successful result holding `value`.
  result(T value) : value_(std::move(value)) {}

  /// A failed result carrying `message`.
  static result failure(std::string message) {
    return result{failure_tag{}, std::move(message)};
  }

  bool ok() const noexcept {
    return value_.has_value();
  }

  explicit operator bool() const noexcept {
    return ok();
  }

  /// The value; throws std::logic_error when the result holds an error.
  T& value() & {
    check();
    return *value_;
  }

  const T& value() const& {
    check();
    return *value_;
  }

  T&& value() && {
    check();
    return std::move(*value_);
  }

  T& operator*() & {
    return value();
  }

  const T& operator*() const& {
    return value();
  }

  T* operator->() {
    return &value();
  }

  const T* operator->() const {
    return &value();
  }

  /// The error message; empty for a successful result.
  const std::string& error() const noexcept {
    return error_;
  }

private:
  struct failure_tag {};

  result(failure_tag, std::string message) : error_(std::move(message)) {}

  void check() const {
    if (!value_)
      throw std::logic_error("service::http::result holds an error: " + error_);
  }

  std::optional<T> value_;
  std::string error_;
};

} // namespace service::http
