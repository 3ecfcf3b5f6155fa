#pragma once

/// @file
/// Text as it may be shown in errors, logs, `/health` and tool output: journal addresses
/// without their secrets, and a server's multi-line message on one line.
///
/// ```cpp
/// redact_secrets("postgresql://bank:s3cret@db:5432/bank");   // "postgresql://bank@db:5432/bank"
/// redact_secrets("host=db dbname=bank password=s3cret");     // "host=db dbname=bank password=***"
/// redact_secrets("nats://a:4222?stream=BANK");               // unchanged
/// ```

#include <string>
#include <string_view>

namespace annals::persistence {

/// `address` (a URI such as `postgresql://USER:PASSWORD@HOST/DB` or `nats://...`, or a
/// libpq keyword/value connection string) without its secrets: the password of a URI's
/// user information is dropped, and the value of every `password` keyword or query
/// parameter becomes `***`. Everything else is kept as it is.
std::string redact_secrets(std::string_view address);

/// `text` on one line: every run of spaces, tabs and line breaks becomes one space, and
/// none leads or trails (libpq's messages span lines: "FATAL: ...\n\tHINT: ...").
std::string one_line(std::string_view text);

} // namespace annals::persistence
