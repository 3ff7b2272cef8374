<%@ page contentType="text/plain; charset=UTF-8" session="false" %>RESOURCE:public:<%= request.getServletPath() %><%= request.getPathInfo() == null ? "" : request.getPathInfo() %>
