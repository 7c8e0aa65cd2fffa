import pytest


@pytest.fixture(autouse=True)
def django_db_serialized_rollback():
    """Every transactional test here restores what the migrations put in the database (the genres, content types
    and permissions) after the flush that ends the previous one, from the copy Django serialised when it set the
    test database up. All or none: a plain transactional flush re-runs post_migrate (re-creating content types),
    which a later serialized restore then collides with."""
    return None
