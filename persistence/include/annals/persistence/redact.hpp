#pragma once

/// @file
/// Journal addresses as they may be shown: in errors, logs, `/health` and tool output.
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

} // namespace annals::persistence
