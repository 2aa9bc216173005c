"""Numbers from Twilio's webhook forms, read so that one odd field cannot cost the webhook.

A signed request can still carry anything (a replay tool, a proxy, a Twilio bug): "inf", "1e400"
or 400 nines parse as floats but not as ints, and a duration of a billion seconds would skew the
handle-time estimates it feeds. Values are cut to a range that can be real (a huge recording
length is still a recording); what is not a number at all reads as 0.
"""

from __future__ import annotations

import math

# Twilio ends every call within 24 hours (TimeLimit's ceiling), so no call duration, queue time
# or recording is longer.
MOST_SECONDS = 86_400


def bounded_int(value: str | None, most: int) -> int:
    """A whole number from 0 to `most`: a larger one (infinity included) is `most`; a missing,
    malformed or NaN value is 0."""
    try:
        number = float(value or 0)
    except ValueError:
        return 0
    if math.isnan(number):
        return 0
    return int(min(max(0.0, number), most))


def whole_seconds(value: str | None) -> int:
    """A duration Twilio reports (CallDuration, QueueTime, RecordingDuration, DialCallDuration)."""
    return bounded_int(value, MOST_SECONDS)
