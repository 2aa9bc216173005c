"""Which `<Say>` language codes and voices Twilio accepts, and which `<Gather>` speech codes.

Twilio fails a `<Say>` nested in `<Gather>` over to the fallback URL when the voice does not fit
the language (2024 changelog), so a bad pair must be caught when the config is loaded, not on a
live call. The table covers the languages a hotline like ours plausibly ships; extend it here
when ops add a language.
"""

from __future__ import annotations

# Say language code -> Polly voice names that Twilio lists for it (without the Neural/Generative
# suffix, which is checked separately).
POLLY_VOICES: dict[str, frozenset[str]] = {
    "en-US": frozenset(
        {
            "Joanna",
            "Matthew",
            "Ivy",
            "Justin",
            "Kendra",
            "Kimberly",
            "Salli",
            "Joey",
            "Kevin",
            "Ruth",
            "Stephen",
            "Danielle",
            "Gregory",
            "Patrick",
        }
    ),
    "en-GB": frozenset({"Amy", "Emma", "Brian", "Arthur"}),
    "en-AU": frozenset({"Nicole", "Russell", "Olivia"}),
    "en-IN": frozenset({"Aditi", "Raveena", "Kajal"}),
    "ja-JP": frozenset({"Mizuki", "Takumi", "Kazuha", "Tomoko"}),
    "cmn-CN": frozenset({"Zhiyu"}),
    "yue-CN": frozenset({"Hiujin"}),
    "ko-KR": frozenset({"Seoyeon"}),
    "es-ES": frozenset({"Conchita", "Lucia", "Enrique", "Sergio"}),
    "es-US": frozenset({"Lupe", "Penelope", "Miguel", "Pedro"}),
    "fr-FR": frozenset({"Celine", "Lea", "Mathieu", "Remi"}),
    "de-DE": frozenset({"Marlene", "Vicki", "Hans", "Daniel"}),
    "pt-BR": frozenset({"Camila", "Vitoria", "Ricardo", "Thiago"}),
    "vi-VN": frozenset(),
    "th-TH": frozenset(),
}

# Google voices are named Google.<say-language>-<family>-<variant>; these languages have them.
GOOGLE_LANGUAGES = frozenset(POLLY_VOICES) | {"cmn-TW", "yue-HK"}

# Twilio's free Basic voices exist only for a few locales; none for ja-JP or cmn-CN.
BASIC_VOICE_LANGUAGES = frozenset({"en-US", "en-GB", "en-AU", "en-IN", "es-ES", "fr-FR", "de-DE"})

SAY_LANGUAGES = GOOGLE_LANGUAGES

# Codes people reach for that Twilio's TTS table does not have, with the code to use instead.
SAY_LANGUAGE_HINTS = {
    "zh-CN": "cmn-CN",
    "zh-TW": "cmn-TW",
    "zh-HK": "yue-HK",
    "zh": "cmn-CN",
    "ja": "ja-JP",
    "en": "en-US",
}

# Gather speech-recognition codes (Google STT). Mandarin is cmn-Hans-CN here, not cmn-CN.
SPEECH_LANGUAGES = frozenset(
    {
        "en-US",
        "en-GB",
        "en-AU",
        "en-IN",
        "ja-JP",
        "cmn-Hans-CN",
        "cmn-Hans-HK",
        "cmn-Hant-TW",
        "yue-Hant-HK",
        "ko-KR",
        "es-ES",
        "es-US",
        "fr-FR",
        "de-DE",
        "pt-BR",
    }
)


def say_language_problem(code: str) -> str | None:
    """Why `code` is not a usable `<Say language>`, or None when it is."""
    if code in SAY_LANGUAGES:
        return None
    hint = SAY_LANGUAGE_HINTS.get(code)
    if hint:
        return f"unknown <Say> language code {code!r}; Twilio uses {hint!r}"
    return f"unknown <Say> language code {code!r}; known: {', '.join(sorted(SAY_LANGUAGES))}"


def voice_problem(voice: str, say_language: str) -> str | None:
    """Why `voice` cannot speak `say_language` on Twilio, or None when it can."""
    if voice in {"man", "woman"}:
        if say_language in BASIC_VOICE_LANGUAGES:
            return None
        return f"Twilio has no Basic voice {voice!r} for {say_language}; use a Polly or Google voice"
    provider, _, name = voice.partition(".")
    if provider == "Polly":
        base = name.split("-", 1)[0]
        suffix = name[len(base) :]
        if suffix not in {"", "-Neural", "-Generative"}:
            return f"unknown Polly voice variant {voice!r}"
        if base in POLLY_VOICES.get(say_language, frozenset()):
            return None
        known = ", ".join(sorted(POLLY_VOICES.get(say_language, ()))) or "none"
        return f"voice {voice!r} does not speak {say_language} (Polly voices for it: {known})"
    if provider == "Google":
        if name.startswith(f"{say_language}-") and len(name) > len(say_language) + 1:
            return None
        return f"Google voice {voice!r} does not speak {say_language} (expected Google.{say_language}-…)"
    return f"unknown voice {voice!r}: expected man, woman, Polly.<Name> or Google.<lang>-<voice>"


def speech_language_problem(code: str) -> str | None:
    """Why `code` is not a usable `<Gather language>` for speech, or None when it is."""
    if code in SPEECH_LANGUAGES:
        return None
    if code == "cmn-CN":
        return "speech recognition codes Mandarin as 'cmn-Hans-CN' (cmn-CN is the <Say> code)"
    return f"unknown speech language {code!r}; known: {', '.join(sorted(SPEECH_LANGUAGES))}"
