-- What libphonenumber's data says of a valid number, read once when its batch is stored:
-- its line type (the proto's LineType values, 1 = mobile ... 12 = unknown) and the original
-- carrier of its range. NULL for invalid entries, and for rows stored before this column
-- (read from the number when they are shown).
ALTER TABLE batch_numbers
    ADD COLUMN line_type smallint,
    ADD COLUMN carrier text;
