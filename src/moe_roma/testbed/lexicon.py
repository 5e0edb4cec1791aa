"""The small bundled word lists and fact tables the testbed's task families draw from.

Everything here is plain data: single-word (or two-word) English entries, so that a
word-level tokenizer keeps each answer short and continuation scoring stays fair across
choices.
"""

from __future__ import annotations

import string

# Category name -> (singular phrase, plural phrase, members). Members are common nouns
# that belong to exactly one category here, so "which of these is X" has one right answer
# (hence no "orange" or "peach" among the fruits: they are colours too; no "organ").
CATEGORIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "fruit": ("a fruit", "fruits", (
        "apple", "banana", "cherry", "grape", "lemon", "mango",
        "apricot", "papaya", "pear", "fig", "melon", "kiwi",
    )),
    "animal": ("an animal", "animals", (
        "cat", "dog", "horse", "cow", "sheep", "lion",
        "tiger", "rabbit", "mouse", "bear", "wolf", "fox",
    )),
    "color": ("a color", "colors", (
        "red", "blue", "green", "yellow", "purple", "black",
        "white", "brown", "pink", "gray", "gold", "silver",
    )),
    "vehicle": ("a vehicle", "vehicles", (
        "car", "bus", "train", "truck", "bicycle", "boat",
        "ship", "plane", "taxi", "tram", "scooter", "van",
    )),
    "furniture": ("a piece of furniture", "pieces of furniture", (
        "chair", "table", "sofa", "bed", "desk", "shelf",
        "stool", "bench", "cupboard", "wardrobe", "dresser", "couch",
    )),
    "tool": ("a tool", "tools", (
        "hammer", "saw", "drill", "wrench", "screwdriver", "shovel",
        "rake", "axe", "pliers", "chisel", "trowel", "hoe",
    )),
    "clothing": ("a piece of clothing", "pieces of clothing", (
        "shirt", "dress", "coat", "jacket", "sock", "hat",
        "scarf", "glove", "skirt", "sweater", "boot", "belt",
    )),
    "body": ("a part of the body", "body parts", (
        "hand", "foot", "knee", "elbow", "shoulder", "ear",
        "nose", "mouth", "finger", "neck", "ankle", "wrist",
    )),
    "instrument": ("a musical instrument", "musical instruments", (
        "piano", "guitar", "violin", "drum", "flute", "trumpet",
        "harp", "cello", "banjo", "clarinet", "trombone", "tuba",
    )),
    "vegetable": ("a vegetable", "vegetables", (
        "carrot", "potato", "onion", "cabbage", "lettuce", "spinach",
        "broccoli", "celery", "radish", "turnip", "leek", "garlic",
    )),
    "sport": ("a sport", "sports", (
        "football", "tennis", "golf", "hockey", "rugby", "cricket",
        "baseball", "basketball", "swimming", "boxing", "skiing", "cycling",
    )),
    "drink": ("a drink", "drinks", (
        "water", "milk", "tea", "coffee", "juice", "soda",
        "lemonade", "cocoa", "smoothie", "cider", "milkshake", "espresso",
    )),
    "building": ("a building", "buildings", (
        "house", "castle", "school", "hospital", "church", "tower",
        "barn", "cabin", "hotel", "library", "palace", "factory",
    )),
}

# Mass nouns and activities read better without an article in "X is a fruit" sentences.
NO_ARTICLE = {"color", "sport", "drink"}

ALL_WORDS: tuple[str, ...] = tuple(w for _, _, ws in CATEGORIES.values() for w in ws)
WORD_CATEGORY: dict[str, str] = {w: c for c, (_, _, ws) in CATEGORIES.items() for w in ws}

# Country -> (capital, continent, language): the "simple facts" table (no country that
# spans two continents, so every continent question has one right answer).
COUNTRIES: dict[str, tuple[str, str, str]] = {
    "France": ("Paris", "Europe", "French"),
    "Germany": ("Berlin", "Europe", "German"),
    "Spain": ("Madrid", "Europe", "Spanish"),
    "Italy": ("Rome", "Europe", "Italian"),
    "Portugal": ("Lisbon", "Europe", "Portuguese"),
    "Greece": ("Athens", "Europe", "Greek"),
    "Poland": ("Warsaw", "Europe", "Polish"),
    "Sweden": ("Stockholm", "Europe", "Swedish"),
    "Norway": ("Oslo", "Europe", "Norwegian"),
    "Denmark": ("Copenhagen", "Europe", "Danish"),
    "Austria": ("Vienna", "Europe", "German"),
    "Ireland": ("Dublin", "Europe", "English"),
    "Netherlands": ("Amsterdam", "Europe", "Dutch"),
    "Hungary": ("Budapest", "Europe", "Hungarian"),
    "Finland": ("Helsinki", "Europe", "Finnish"),
    "Japan": ("Tokyo", "Asia", "Japanese"),
    "China": ("Beijing", "Asia", "Chinese"),
    "Thailand": ("Bangkok", "Asia", "Thai"),
    "Vietnam": ("Hanoi", "Asia", "Vietnamese"),
    "Indonesia": ("Jakarta", "Asia", "Indonesian"),
    "Iran": ("Tehran", "Asia", "Persian"),
    "Nepal": ("Kathmandu", "Asia", "Nepali"),
    "Egypt": ("Cairo", "Africa", "Arabic"),
    "Kenya": ("Nairobi", "Africa", "Swahili"),
    "Nigeria": ("Abuja", "Africa", "English"),
    "Morocco": ("Rabat", "Africa", "Arabic"),
    "Ghana": ("Accra", "Africa", "English"),
    "Senegal": ("Dakar", "Africa", "French"),
    "Brazil": ("Brasilia", "South America", "Portuguese"),
    "Peru": ("Lima", "South America", "Spanish"),
    "Chile": ("Santiago", "South America", "Spanish"),
    "Colombia": ("Bogota", "South America", "Spanish"),
    "Canada": ("Ottawa", "North America", "English"),
    "Cuba": ("Havana", "North America", "Spanish"),
    "Jamaica": ("Kingston", "North America", "English"),
    "Australia": ("Canberra", "Oceania", "English"),
    "Fiji": ("Suva", "Oceania", "English"),
}
CONTINENTS: tuple[str, ...] = ("Europe", "Asia", "Africa", "South America", "North America", "Oceania")
LANGUAGES: tuple[str, ...] = tuple(sorted({lang for _, _, lang in COUNTRIES.values()}))

ANTONYMS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"),
    ("bright", "dim"), ("old", "young"), ("rich", "poor"), ("king", "queen"),
    ("wet", "dry"), ("open", "closed"), ("early", "late"), ("full", "empty"),
    ("heavy", "light"), ("up", "down"), ("left", "right"), ("day", "night"),
    ("inside", "outside"), ("strong", "weak"), ("loud", "quiet"), ("clean", "dirty"),
    ("thick", "thin"), ("high", "low"), ("long", "short"), ("wide", "narrow"),
    ("easy", "difficult"), ("cheap", "expensive"), ("true", "false"), ("first", "last"),
    ("push", "pull"), ("win", "lose"), ("buy", "sell"), ("give", "take"),
    ("ancient", "modern"), ("before", "after"), ("love", "hate"), ("begin", "end"),
    ("sweet", "sour"), ("safe", "dangerous"), ("awake", "asleep"), ("friend", "enemy"),
    ("near", "far"), ("north", "south"), ("east", "west"), ("arrive", "leave"),
    ("remember", "forget"), ("laugh", "cry"), ("wild", "tame"), ("smooth", "rough"),
    ("deep", "shallow"), ("sharp", "blunt"), ("tight", "loose"), ("polite", "rude"),
    ("fresh", "stale"), ("healthy", "sick"), ("accept", "refuse"), ("victory", "defeat"),
    ("entrance", "exit"), ("borrow", "lend"), ("float", "sink"), ("summer", "winter"),
)
# No word has two listed opposites and no distractor is a second right answer (hence no
# "hard": it is the opposite of both "soft" and "easy"; no "dark"/"light" next to "heavy").
OPPOSITE: dict[str, str] = {a: b for a, b in ANTONYMS} | {b: a for a, b in ANTONYMS}

LETTERS: tuple[str, ...] = tuple(string.ascii_uppercase)
DAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)

# (small unit plural, big unit singular, big unit plural, how many small units in one big).
UNITS: tuple[tuple[str, str, str, int], ...] = (
    ("seconds", "minute", "minutes", 60),
    ("minutes", "hour", "hours", 60),
    ("hours", "day", "days", 24),
    ("days", "week", "weeks", 7),
    ("months", "year", "years", 12),
    ("centimeters", "meter", "meters", 100),
    ("millimeters", "centimeter", "centimeters", 10),
    ("eggs", "dozen", "dozen", 12),
)

NAMES: tuple[str, ...] = (
    "Tom", "Anna", "Sam", "Mia", "Leo", "Emma", "Ben", "Lily", "Max", "Zoe", "Jack", "Ella",
)
# Countable things for word problems (plural forms).
OBJECTS: tuple[str, ...] = (
    "apples", "books", "coins", "marbles", "pencils", "stickers", "cookies", "cards",
    "balloons", "shells", "stamps", "toys",
)
