from django.conf import settings
from django.db import models
from django.db.models import Q


class Genre(models.Model):
    name = models.CharField(max_length=60, unique=True)
    slug = models.SlugField(max_length=60, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Author(models.Model):
    name = models.CharField(max_length=200)
    born = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class BookQuerySet(models.QuerySet):
    def with_open_loans(self):
        return self.annotate(open_loans=models.Count("loans", filter=Q(loans__returned_at__isnull=True)))

    def available(self):
        return self.with_open_loans().filter(copies__gt=models.F("open_loans"))


class Book(models.Model):
    title = models.CharField(max_length=300)
    slug = models.SlugField(max_length=80)
    isbn = models.CharField(max_length=13, unique=True)
    author = models.ForeignKey(Author, on_delete=models.PROTECT, related_name="books")
    genre = models.ForeignKey(Genre, on_delete=models.SET_NULL, null=True, blank=True, related_name="books")
    published = models.IntegerField(null=True, blank=True)
    copies = models.PositiveIntegerField(default=1)

    objects = BookQuerySet.as_manager()

    class Meta:
        ordering = ["title"]
        constraints = [models.CheckConstraint(check=Q(copies__gte=0), name="book_copies_not_negative")]

    def __str__(self):
        return self.title


class Member(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="member")
    card_number = models.CharField(max_length=12, unique=True)
    active = models.BooleanField(default=True)
    max_open_loans = models.PositiveIntegerField(null=True, blank=True)  # None: the library's default

    def __str__(self):
        return self.card_number


class Loan(models.Model):
    book = models.ForeignKey(Book, on_delete=models.PROTECT, related_name="loans")
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="loans")
    borrowed_at = models.DateTimeField()
    due_at = models.DateTimeField()
    returned_at = models.DateTimeField(null=True, blank=True)
    fee = models.DecimalField(max_digits=6, decimal_places=2, default=0)
    renewals = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-borrowed_at"]
        constraints = [
            # A member holds at most one open loan of a given book.
            models.UniqueConstraint(fields=["book", "member"], condition=Q(returned_at__isnull=True),
                                    name="one_open_loan_per_member_and_book"),
            models.CheckConstraint(check=Q(due_at__gt=models.F("borrowed_at")), name="loan_due_after_borrowed"),
        ]

    @property
    def is_open(self):
        return self.returned_at is None


class AuditEntry(models.Model):
    """Written in the same transaction as what it records, so a rolled-back borrow leaves no entry."""
    action = models.CharField(max_length=40)
    loan = models.ForeignKey(Loan, on_delete=models.CASCADE, null=True, related_name="audit")
    detail = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
