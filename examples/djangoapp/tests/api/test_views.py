import json
from datetime import timedelta

import pytest
from django.utils import timezone

from lending.models import Loan

pytestmark = [pytest.mark.api, pytest.mark.django_db]


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_book_list_is_empty_without_books(client):
    response = client.get("/api/books/")
    assert response.status_code == 200
    assert response.json() == {"books": []}


@pytest.mark.parametrize("n", [1, 4, 9])
def test_book_list(client, make_book, n):
    for _ in range(n):
        make_book()
    assert len(client.get("/api/books/").json()["books"]) == n


@pytest.mark.parametrize("genre", ["fantasy", "crime", "poetry"])
def test_book_list_by_genre(client, make_book, genre):
    make_book(genre=genre)
    make_book(genre="history")
    books = client.get(f"/api/books/?genre={genre}").json()["books"]
    assert [b["genre"] for b in books] == [genre]


def test_available_filter(client, make_book, make_member):
    lent, free = make_book(copies=1), make_book(copies=1)
    post(client, "/api/loans/", {"book": lent.pk, "member": make_member().pk})
    books = client.get("/api/books/?available=1").json()["books"]
    assert [b["id"] for b in books] == [free.pk]


def test_book_detail(client, make_book):
    book = make_book(title="The Left Hand of Darkness", copies=2)
    body = client.get(f"/api/books/{book.pk}/").json()
    assert body["title"] == "The Left Hand of Darkness"
    assert body["available"] == 2


@pytest.mark.parametrize("url", ["/api/books/999999/", "/api/members/999999/loans/"])
def test_unknown_ids_are_404(client, url):
    assert client.get(url).status_code == 404


def test_borrow_through_the_api(client, make_book, make_member):
    book, member = make_book(), make_member()
    response = post(client, "/api/loans/", {"book": book.pk, "member": member.pk})
    assert response.status_code == 201
    assert Loan.objects.get(pk=response.json()["id"]).is_open


@pytest.mark.parametrize("body", [{}, {"book": 1}, {"member": 1}, {"book": "x", "member": 1}, {"book": None, "member": 2}])
def test_bad_borrow_requests_are_400(client, body):
    assert post(client, "/api/loans/", body).status_code == 400


def test_borrow_of_a_missing_book_is_404(client, make_member):
    assert post(client, "/api/loans/", {"book": 999999, "member": make_member().pk}).status_code == 404


def test_conflicts_are_409_with_a_code(client, make_book, make_member):
    book = make_book(copies=1)
    post(client, "/api/loans/", {"book": book.pk, "member": make_member().pk})
    response = post(client, "/api/loans/", {"book": book.pk, "member": make_member().pk})
    assert response.status_code == 409
    assert response.json()["error"] == "no_copy_available"


def test_return_through_the_api(client, make_book, make_member):
    loan_id = post(client, "/api/loans/", {"book": make_book().pk, "member": make_member().pk}).json()["id"]
    response = client.post(f"/api/loans/{loan_id}/return/")
    assert response.status_code == 200
    assert response.json()["returned_at"] is not None
    assert client.post(f"/api/loans/{loan_id}/return/").status_code == 409


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_wrong_methods_are_405(client, method):
    assert getattr(client, method)("/api/loans/").status_code == 405


@pytest.mark.parametrize("open_only, expected", [(False, 3), (True, 2)])
def test_member_loans(client, make_book, make_member, open_only, expected):
    member = make_member()
    ids = [post(client, "/api/loans/", {"book": make_book().pk, "member": member.pk}).json()["id"] for _ in range(3)]
    client.post(f"/api/loans/{ids[0]}/return/")
    url = f"/api/members/{member.pk}/loans/" + ("?open=1" if open_only else "")
    assert len(client.get(url).json()["loans"]) == expected


@pytest.mark.parametrize("days_late, fee", [(0, "0.00"), (3, "0.50"), (100, "10.00")])
def test_fee_shown_after_return(client, make_book, make_member, days_late, fee):
    loan_id = post(client, "/api/loans/", {"book": make_book().pk, "member": make_member().pk}).json()["id"]
    # Fees count calendar days: due at the start of the day `days_late` days ago, not "days_late days and an hour
    # ago", which is a day later whenever the test runs in the first hour after midnight.
    due = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_late)
    Loan.objects.filter(pk=loan_id).update(borrowed_at=due - timedelta(days=14), due_at=due)
    body = client.post(f"/api/loans/{loan_id}/return/").json()
    assert body["fee"] == fee
