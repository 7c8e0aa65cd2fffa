"""A small JSON API: books with availability, borrowing, returning, a member's loans."""

import json

from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import services
from .models import Book, Loan, Member


def _book(book):
    open_loans = getattr(book, "open_loans", None)
    if open_loans is None:
        open_loans = book.loans.filter(returned_at__isnull=True).count()
    return {"id": book.pk, "title": book.title, "isbn": book.isbn, "author": book.author.name,
            "genre": book.genre.slug if book.genre else None, "copies": book.copies,
            "available": book.copies - open_loans}


def _loan(loan):
    return {"id": loan.pk, "book": loan.book_id, "member": loan.member_id, "borrowed_at": loan.borrowed_at.isoformat(),
            "due_at": loan.due_at.isoformat(), "returned_at": loan.returned_at.isoformat() if loan.returned_at else None,
            "fee": str(loan.fee)}


@require_GET
def book_list(request):
    books = Book.objects.with_open_loans().select_related("author", "genre")
    if request.GET.get("available") == "1":
        books = books.available()
    if genre := request.GET.get("genre"):
        books = books.filter(genre__slug=genre)
    return JsonResponse({"books": [_book(b) for b in books]})


@require_GET
def book_detail(request, book_id):
    book = get_object_or_404(Book.objects.with_open_loans().select_related("author", "genre"), pk=book_id)
    return JsonResponse(_book(book))


@csrf_exempt
@require_POST
def loan_create(request):
    try:
        body = json.loads(request.body or b"{}")
        book_id, member_id = int(body["book"]), int(body["member"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "bad_request", "detail": "expected {\"book\": id, \"member\": id}"}, status=400)
    get_object_or_404(Book, pk=book_id)
    get_object_or_404(Member, pk=member_id)
    try:
        loan = services.borrow(book_id, member_id)
    except services.LendingError as exc:
        return JsonResponse({"error": exc.code, "detail": str(exc)}, status=409)
    return JsonResponse(_loan(loan), status=201)


@csrf_exempt
@require_POST
def loan_return(request, loan_id):
    get_object_or_404(Loan, pk=loan_id)
    try:
        loan = services.return_book(loan_id)
    except services.LendingError as exc:
        return JsonResponse({"error": exc.code, "detail": str(exc)}, status=409)
    return JsonResponse(_loan(loan))


@require_GET
def member_loans(request, member_id):
    member = get_object_or_404(Member, pk=member_id)
    loans = member.loans.all()
    if request.GET.get("open") == "1":
        loans = loans.filter(returned_at__isnull=True)
    return JsonResponse({"member": member.card_number, "loans": [_loan(l) for l in loans]})
