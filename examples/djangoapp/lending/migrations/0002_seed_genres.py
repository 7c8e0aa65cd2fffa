"""Data migration: the genres every library starts with. Tests rely on them being there (they come with the
migrated database, i.e. with testshard's template, or with pytest-django's freshly migrated test database)."""

from django.db import migrations

GENRES = [
    ("Biography", "biography"), ("Children", "children"), ("Crime", "crime"), ("Fantasy", "fantasy"),
    ("History", "history"), ("Poetry", "poetry"), ("Science", "science"), ("Science Fiction", "science-fiction"),
]


def seed(apps, schema_editor):
    Genre = apps.get_model("lending", "Genre")
    for name, slug in GENRES:
        Genre.objects.get_or_create(slug=slug, defaults={"name": name})


def unseed(apps, schema_editor):
    apps.get_model("lending", "Genre").objects.filter(slug__in=[s for _, s in GENRES]).delete()


class Migration(migrations.Migration):
    dependencies = [("lending", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
